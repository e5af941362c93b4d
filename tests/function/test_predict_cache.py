"""The model cache: no model yet, a promoted one served within the interval, broken ones
refused, the pointer checked at most once per interval, the bucket going away."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milkprice import store
from milkprice.local import processes
from milkprice.local.object_stores import fake_gcs
from milkprice.predict import cache
from milkprice.settings import Settings
from tests.support.buckets import artifact, clone, manifest, promote
from tests.support.openapi_client import Client
from tests.support.prices import onnx_prices
from tests.support.rows import next_row, perturbed
from tests.support.telemetry import key, parse

pytestmark = pytest.mark.usefixtures("fresh_process")


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Log records of the predict function."""
    found: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("milkprice.predict")
    logger.addHandler(handler)
    yield found
    logger.removeHandler(handler)


def wait_for_version(client: Client, version: str, within: float) -> float:
    """Seconds until ``/forecast`` answers from ``version``; fails after ``within``."""
    start = time.monotonic()
    while True:
        response = client.get("/forecast")
        if response.status_code == 200 and response.get_json()["model_version"] == version:
            return time.monotonic() - start
        assert time.monotonic() - start < within, (version, response.get_json())
        time.sleep(0.02)


# ---------------------------------------------------------------- no model yet


def test_no_model_yet_is_503_with_retry_after(settings: Settings) -> None:
    client = Client()
    for path in ("/", "/forecast", "/backtest.png", "/v2/health/ready", "/v2/models/forecast"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert int(response.headers["Retry-After"]) >= 1
        assert "promoted" in response.get_json()["error"]
    response = client.post("/predict", json={"data": [{"a": 1.0}]})
    assert response.status_code == 503 and response.headers["Retry-After"]
    # liveness, server metadata and the API description need no model
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2").get_json()["name"] == "milk-price"
    assert client.get("/openapi.json").status_code == 200


# ---------------------------------------------------------------- the model cache


def test_a_promoted_model_is_served_within_the_interval(
    settings: Settings,
    trained_sample: tuple[Settings, dict[str, Any]],
    trained_real: tuple[Settings, dict[str, Any]],
    records: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.2
    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", str(interval))
    client = Client()
    assert client.get("/forecast").status_code == 503
    first = clone(trained_sample[0], settings, "v1-sample")
    promote(settings, first)
    time.sleep(interval)
    assert client.get("/forecast").get_json()["model_version"] == first
    # a new version, another model: served within the interval (plus its own load)
    second = clone(trained_real[0], settings, "v2-real")
    promote(settings, second)
    assert wait_for_version(client, second, within=interval + 2.0) < interval + 1.0
    doc = manifest(settings, second)
    rows = perturbed(next_row(doc), 3)
    np.testing.assert_allclose(
        client.post("/predict", json={"data": rows}).get_json(),
        onnx_prices(settings, doc, "forecast", rows),
        rtol=1e-9,
    )
    assert client.get("/forecast").get_json()["price"] == doc["path"]["months"][0]["price"]
    assert client.get("/backtest.png").data == artifact(settings, second, "backtest.png")
    served = [r for r in records if r.getMessage().startswith("serving model version")]
    assert [getattr(r, "version", None) for r in served] == [first, second]

    # then broken promotions: each is logged, and the old model keeps serving
    for make, problem in _broken_promotions(settings, trained_sample[0]):
        records.clear()
        make()
        time.sleep(interval * 1.5)
        for _ in range(3):
            response = client.get("/forecast")
            assert response.status_code == 200
            assert response.get_json()["model_version"] == second, problem
            time.sleep(interval / 2)
        assert client.get("/v2/health/ready").status_code == 200
        errors = [r for r in records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in records]  # not retried on every check
        assert getattr(errors[0], "version", None) == second and problem in errors[0].getMessage()
    # and a good one is served again
    last = clone(trained_sample[0], settings, "v7-sample")
    promote(settings, last)
    wait_for_version(client, last, within=interval + 2.0)


def _broken_promotions(
    settings: Settings, sample: Settings
) -> list[tuple[Callable[[], object], str]]:
    """Ways a promotion can go wrong, each with what its logged error says: an artifact
    that does not match its checksum, a manifest without models, a version that is not
    there, a pointer that is not JSON, a pointer naming a path outside the versions."""
    return [
        (
            lambda: promote(
                settings, clone(sample, settings, "v3-bad-onnx", corrupt="forecast.onnx")
            ),
            "forecast.onnx has sha256",
        ),
        (
            lambda: promote(
                settings, clone(sample, settings, "v4-bad-chart", corrupt="backtest.png")
            ),
            "backtest.png has sha256",
        ),
        (
            lambda: promote(
                settings, clone(sample, settings, "v5-no-models", edit=lambda d: d.pop("models"))
            ),
            "missing required field `models`",
        ),
        (lambda: promote(settings, "v6-missing"), "manifest.json is missing"),
        (
            lambda: store.write(settings, store.POINTER, b"{not json", "application/json"),
            "names no version",
        ),
        (
            lambda: store.write(
                settings,
                store.POINTER,
                b'{"version": "../v2-real", "run_id": "r", "promoted": "2026-01-01T00:00:00Z"}',
            ),
            "no valid version",
        ),
    ]


def test_the_pointer_is_checked_at_most_once_per_interval(
    settings: Settings,
    trained_sample: tuple[Settings, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "0.5")
    promote(settings, clone(trained_sample[0], settings, "v1"))
    checks: list[float] = []
    real = cache.pointer_token

    def counted(s: Settings) -> str | None:  # counts, and asks the real bucket
        checks.append(time.monotonic())
        return real(s)

    monkeypatch.setattr(cache, "pointer_token", counted)
    client = Client()
    row = next_row(manifest(settings))
    start = time.monotonic()
    requests = 0
    while time.monotonic() - start < 1.6:
        assert client.post("/predict", json={"data": [row]}).status_code == 200
        requests += 1
    assert requests > 50
    assert 2 <= len(checks) <= 5, checks
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(checks))


def test_a_long_interval_keeps_the_loaded_model(
    settings: Settings,
    trained_sample: tuple[Settings, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "60")
    promote(settings, clone(trained_sample[0], settings, "v1"))
    client = Client()
    assert client.get("/forecast").get_json()["model_version"] == "v1"
    promote(settings, clone(trained_sample[0], settings, "v2"))
    time.sleep(0.3)
    for _ in range(20):
        assert client.get("/forecast").get_json()["model_version"] == "v1"


def test_the_bucket_away(
    tmp_path: Path,
    trained_sample: tuple[Settings, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Down before any model: 503 with Retry-After. Down later: the loaded model serves on."""
    port = processes.free_port()
    root = tmp_path / "gcs"
    proc = fake_gcs.start(root, port)
    try:
        # a client of its own (another project), on an emulator this test can stop
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url("127.0.0.1", port))
        private = Settings(bucket="away", project=f"away-{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("MILKPRICE_PROJECT", private.project)
        monkeypatch.setenv("MILKPRICE_BUCKET", private.bucket)
        monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "0.2")
        store.ensure_bucket(private)
        fake_gcs.stop(proc)
        client = Client()
        before = _storage_errors(client)
        response = client.get("/forecast")
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert "unavailable" in response.get_json()["error"]
        assert _storage_errors(client) == before + 1  # counted as the pointer's
        proc = fake_gcs.start(root, port)
        version = clone(trained_sample[0], private, "v1")
        promote(private, version)
        wait_for_version(client, version, within=2.0)
        fake_gcs.stop(proc)
        time.sleep(0.3)
        # the one request that checks waits for the bucket, briefly; the others serve meanwhile
        checking: list[Any] = []
        other = client.app.test_client()  # test clients are not shared between threads
        thread = threading.Thread(target=lambda: checking.append(other.get("/forecast")))
        started = time.monotonic()
        thread.start()
        time.sleep(0.1)
        assert thread.is_alive()
        for _ in range(10):
            start = time.monotonic()
            response = client.get("/forecast")
            assert response.status_code == 200 and time.monotonic() - start < 1.0
            assert response.get_json()["model_version"] == version
        thread.join(timeout=30)
        assert time.monotonic() - started < 3.0  # not store's 10 s of retries
        assert _storage_errors(client) >= before + 2
        assert checking[0].status_code == 200
        assert checking[0].get_json()["model_version"] == version
        assert client.get("/v2/health/ready").status_code == 200
    finally:
        fake_gcs.stop(proc)


def _storage_errors(client: Client) -> float:
    """The pointer reads that failed, as /metrics counts them."""
    samples = parse(client.get("/metrics").get_data(as_text=True))
    return samples.get(key("milkprice_predict_storage_errors_total", operation="pointer"), 0)


def test_pointer_checks_back_off_while_storage_fails() -> None:
    server = cache.Server(Settings(bucket="any", reload_seconds=2.0))
    assert server.delay() == 2.0  # nothing loaded: keep trying at the interval
    server._outages = 3
    assert server.delay() == 2.0
    server._loaded = object()  # type: ignore[assignment]
    server._outages = 0
    assert server.delay() == 2.0
    assert [server.delay() for server._outages in (1, 2, 3, 10)] == [4.0, 8.0, 16.0, 60.0]
