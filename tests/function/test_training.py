"""The train function end to end against the real fake-gcs-server: both triggers."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from milkprice import contract, store
from milkprice.errors import ExportError, StorageUnavailable
from milkprice.settings import Settings
from milkprice.train import artifacts, features, runner
from tests.support.buckets import runs, upload
from tests.support.paths import TRAIN_MAIN

SOURCE = str(TRAIN_MAIN)


def http_client() -> Any:
    return functions_framework.create_app("train_http", SOURCE, "http").test_client()


def event_client() -> Any:
    return functions_framework.create_app("train_event", SOURCE, "cloudevent").test_client()


def finalized(
    settings: Settings, name: str, generation: int | str, event_id: str = "1"
) -> CloudEvent:
    return CloudEvent(
        {
            "type": "google.cloud.storage.object.v1.finalized",
            "source": f"//storage.googleapis.com/projects/_/buckets/{settings.bucket}",
            "subject": f"objects/{name}",
            "id": event_id,
        },
        {"bucket": settings.bucket, "name": name, "generation": str(generation)},
    )


def send(client: Any, event: CloudEvent) -> Any:
    headers, body = to_binary(event)
    return client.post("/", headers=headers, data=body)


def pointer(settings: Settings) -> tuple[dict[str, Any], str] | None:
    found = contract.read_pointer(settings)
    return None if found is None else (contract.to_builtins(found[0]), found[1])


def test_http_trigger_trains_writes_and_promotes(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    generations = upload(settings, sample_raw)
    response = http_client().post("/")
    assert response.status_code == 200, response.get_data(as_text=True)
    record = response.get_json()
    assert record["outcome"] == "promoted" and record["trigger"] == "http"
    version = record["version"]

    # the pointer names the version, whose every artifact is there and matches the manifest
    current, _ = pointer(settings)  # type: ignore[misc]
    assert current["version"] == version
    manifest = contract.to_builtins(contract.read_manifest(settings, version))
    for name in (
        "forecast.onnx",
        "legacy.onnx",
        "forecast.skops",
        "legacy.skops",
        "backtest.csv",
        "backtest.png",
    ):
        blob = store.read(settings, store.model_path(version, name))
        assert blob is not None, name
        assert hashlib.sha256(blob.data).hexdigest() == manifest["files"][name]
    for role in ("forecast", "legacy"):
        entry = manifest["models"][role]
        onnx_name = entry["onnx"]
        assert entry["sha256"][onnx_name] == manifest["files"][onnx_name]
        assert entry["backtest"]["rmse"] > 0 and entry["naive"]["rmse"] > 0
    assert set(manifest["models"]["legacy"]["features"]) <= set(features.LEGACY_FEATURES)
    # the next month's feature row can be scored by the forecast model as served
    onnx_bytes = store.read(settings, store.model_path(version, "forecast.onnx")).data  # type: ignore[union-attr]
    row = [[manifest["next"]["features"][f] for f in manifest["models"]["forecast"]["features"]]]
    price = float(artifacts.onnx_predict(onnx_bytes, row)[0])  # type: ignore[arg-type]
    assert 100 < price < 1000
    assert manifest["next"]["month"] == "2021-03"
    # inputs: generations, sha256 and an archive copy of each raw generation
    for name, gen in generations.items():
        entry = manifest["inputs"][store.RAW_PREFIX + name]
        assert entry["token"] == gen
        archived = store.read(settings, entry["archive"])
        assert archived is not None and archived.data == sample_raw[name]
    assert manifest["libraries"]["scikit-learn"]
    # one run record, with timings of every stage
    [run] = runs(settings)
    assert run["run_id"] == record["run_id"] and run["outcome"] == "promoted"
    assert {"read", "clean", "backtest", "write", "promote"} <= set(run["timings"])
    assert run["cleaning"]["banco_central.csv"]["unparsable_periods_dropped"] == 1


def test_event_trigger_trains_once_per_input_set(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    generations = upload(settings, sample_raw)
    client = event_client()
    name = "raw/precio_leche.csv"
    assert (
        send(client, finalized(settings, name, generations["precio_leche.csv"])).status_code == 200
    )
    assert [r["outcome"] for r in runs(settings)] == ["promoted"]
    assert runs(settings)[0]["trigger"] == "upload"
    # a redelivery, and the events of the two other files of the same upload: no new run
    assert (
        send(client, finalized(settings, name, generations["precio_leche.csv"])).status_code == 200
    )
    other = "raw/banco_central.csv"
    assert (
        send(client, finalized(settings, other, generations["banco_central.csv"], "2")).status_code
        == 200
    )
    assert len(runs(settings)) == 1
    # objects outside raw/ and other names are ignored
    assert send(client, finalized(settings, "models/x.json", 5, "3")).status_code == 200
    assert send(client, finalized(settings, "raw/notes.txt", 5, "4")).status_code == 200
    assert len(runs(settings)) == 1
    # a new generation of a raw file trains again
    new_gen = store.write(settings, name, sample_raw["precio_leche.csv"], "text/csv")
    assert send(client, finalized(settings, name, new_gen, "5")).status_code == 200
    assert sorted(r["outcome"] for r in runs(settings)) == ["promoted", "promoted"]


def test_bad_raw_file_fails_clearly_and_keeps_the_serving_model(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    upload(settings, sample_raw)
    first = http_client().post("/").get_json()
    assert first["outcome"] == "promoted"
    before = pointer(settings)
    bad = sample_raw["precipitaciones.csv"].replace(b",", b";")
    store.write(settings, "raw/precipitaciones.csv", bad, "text/csv")
    response = http_client().post("/")
    assert response.status_code == 422
    record = response.get_json()
    assert record["outcome"] == "failed"
    assert "precipitaciones.csv" in record["reason"] and "';'" in record["reason"]
    assert pointer(settings) == before
    # the bad object stays in the bucket, for inspection
    assert store.read(settings, "raw/precipitaciones.csv").data == bad  # type: ignore[union-attr]
    assert {r["outcome"] for r in runs(settings)} == {"promoted", "failed"}


def test_missing_raw_files_fail_with_a_record(settings: Settings) -> None:
    response = http_client().post("/")
    assert response.status_code == 422
    assert "precio_leche.csv" in response.get_json()["reason"]
    assert [r["outcome"] for r in runs(settings)] == ["failed"]
    assert pointer(settings) is None


def test_token_required_when_configured(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MILKPRICE_TRAIN_TOKEN", "s3cret")
    client = http_client()
    assert client.post("/").status_code == 401
    assert client.post("/", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 405
    assert (
        client.post(
            "/", json={"trigger": "upload"}, headers={"Authorization": "Bearer s3cret"}
        ).status_code
        == 400
    )
    assert runs(settings) == []


def test_promotion_is_a_compare_and_swap(settings: Settings) -> None:
    seen = pointer(settings)
    assert seen is None
    assert contract.promote(settings, "v1", "r1", None) is None  # promoted
    # a second run that saw the same (empty) pointer must not promote blindly
    late = contract.promote(settings, "v2", "r2", None)
    assert late == "v1"  # not promoted: it names the version that won
    assert pointer(settings)[0]["version"] == "v1"  # type: ignore[index]


def test_schedule_trigger_is_recorded(settings: Settings, sample_raw: dict[str, bytes]) -> None:
    upload(settings, sample_raw)
    record = http_client().post("/", json={"trigger": "schedule"}).get_json()
    assert record["trigger"] == "schedule"
    assert json.loads(json.dumps(record))["outcome"] == "promoted"


@pytest.mark.parametrize(
    ("error", "redelivered", "status"),
    [
        (ExportError("exported model disagrees with the fitted one"), False, 500),
        (StorageUnavailable("writing x: storage unavailable"), True, 503),
        (KeyError("forecast"), False, 500),  # a bug: the same every time
    ],
)
def test_only_a_failure_a_retry_can_help_is_redelivered(
    settings: Settings,
    sample_raw: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    redelivered: bool,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model that does not export exactly fails the same way every time: the storage
    trigger must not ask for the event again (it would be redelivered forever)."""

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(runner, "_write_artifacts", fail)
    tokens = upload(settings, sample_raw)
    event = finalized(settings, "raw/precio_leche.csv", tokens["precio_leche.csv"])
    with caplog.at_level(logging.INFO):
        answered = send(event_client(), event)
    assert answered.status_code == (500 if redelivered else 200)
    [record] = runs(settings)
    assert record["outcome"] == "failed" and record["error"]["retryable"] is redelivered
    if redelivered:  # asked for on purpose: answered with the run's record, no crash logged
        assert answered.get_json()["run_id"] == record["run_id"]
        assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert record["error"]["status"] == status
    answer = http_client().post("/")
    assert answer.status_code == status and answer.get_json()["outcome"] == "failed"
