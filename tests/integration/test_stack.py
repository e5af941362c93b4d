"""End to end: the whole stack as `make up` starts it, no Docker, driven as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage

from milkprice import contract, store
from milkprice.local.object_stores import fake_gcs
from milkprice.settings import Settings
from tests.support.paths import ROOT, SHARED
from tests.support.servers import call
from tests.support.stack import Stack, held_ports, parents

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


def test_up_serves_trains_on_upload_and_stops_cleanly(stack: Stack) -> None:
    stack.wait_ready(timeout=300)
    assert any("waiting for the first model" in line for line in stack.lines)  # progress shown
    assert any(line.lstrip().startswith("predict |") for line in stack.lines)  # prefixed logs
    status, forecast, _ = stack.get("/forecast")
    assert status == 200 and forecast["price"] > 0
    first = forecast["model_version"]
    # the printed curl example works as printed
    printed = next(line for line in stack.lines if "-d @" in line)
    body = Path(ROOT, printed.rsplit("-d @", 1)[1].strip()).read_bytes()
    request = urllib.request.Request(
        stack.url("/predict"),
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        printed_price = json.loads(r.read())[0]
        assert r.status == 200
    # it is next month's feature row, priced by the served model as V2 infer prices it
    row = json.loads(body)["data"][0]
    status, meta = call(stack.url("/v2/models/forecast"), method="GET")
    assert status == 200, meta
    names = meta["parameters"]["feature_names"]
    tensor = {"name": "X", "shape": [1, len(names)], "datatype": "FP64"}
    tensor["data"] = [row[n] for n in names]
    status, inferred = call(stack.url("/v2/models/forecast/infer"), {"inputs": [tensor]})
    assert status == 200, inferred
    assert printed_price == pytest.approx(inferred["outputs"][0]["data"][0], rel=1e-12)

    # a second `up` fails at once with a clear message, not a port traceback
    second = subprocess.run(
        [sys.executable, "-m", "milkprice.local.cli", "up"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0 and "already running" in second.stderr
    assert "Traceback" not in second.stderr

    # a user uploads new raw data with the plain client; the stack retrains and serves it
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{stack.ports['GCS']}"
    bucket = storage.Client(project="any").bucket("milk-price")
    source = SHARED if SHARED.is_dir() else None
    for name in ("precio_leche.csv", "precipitaciones.csv", "banco_central.csv"):
        blob = bucket.blob(f"raw/{name}")
        if source:
            blob.upload_from_filename(str(source / name), content_type="text/csv")
        else:
            blob.upload_from_string(bucket.blob(f"raw/{name}").download_as_bytes() + b"\n")
    deadline = time.monotonic() + 300
    version = first
    while version == first and time.monotonic() < deadline:
        time.sleep(1)
        version = stack.get("/forecast")[1]["model_version"]
    assert version != first, "\n".join(stack.lines[-30:])

    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(timeout=30) == 0
    for port in stack.ports.values():  # every child is gone
        assert fake_gcs.is_up("127.0.0.1", port, timeout=0.2) is False


def _runs(stack: Stack) -> list[dict[str, Any]]:
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{stack.ports['GCS']}"
    store.reset()
    return [contract.to_builtins(r) for r in contract.list_runs(Settings(bucket="milk-price"))]


def _train_and_interrupt(stack: Stack, sig: signal.Signals) -> str:
    """Start a training as a user does, signal ``up`` at its backtest; the run's id."""
    before = {r["run_id"] for r in _runs(stack)}
    client = subprocess.Popen(
        [sys.executable, "-m", "milkprice.local.cli", "train"],
        cwd=ROOT,
        env=stack.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    running: list[dict[str, Any]] = []
    while not running and time.monotonic() < deadline:
        time.sleep(0.2)
        running = [
            r
            for r in _runs(stack)
            if r["run_id"] not in before and str(r.get("stage", "")).startswith("backtest")
        ]
    assert running, "the training never reached its backtest"
    stack.interrupt(sig)
    client.wait(timeout=60)
    return str(running[0]["run_id"])


# SIGINT in make test, SIGTERM in make test-long: the same stop, by the other signal
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.long)]
)
def test_a_stop_during_training_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    # every candidate: a training long enough to be stopped in the middle of its backtest
    first = Stack(tmp_path, candidates="")
    try:
        first.wait_ready(timeout=300)
        served = first.get("/forecast")[1]["model_version"]
        under = first.descendants()
        assert len(under) >= 5  # the bucket, three function servers with workers, events
        run_id = _train_and_interrupt(first, sig)
        signalled = time.monotonic()
        first.proc.wait(timeout=15)
        while time.monotonic() - signalled < 15 and (
            under & set(parents()) or held_ports(first.ports)
        ):
            time.sleep(0.2)
        assert not under & set(parents()), "processes left behind"
        assert not held_ports(first.ports), "ports still held"
        assert first.proc.returncode == 0
    finally:
        first.close()

    # the same state and ports: starts, serves as before
    second = Stack(tmp_path, first.ports, candidates="")
    try:
        second.wait_ready(timeout=120)
        assert second.get("/forecast")[1]["model_version"] == served  # the pointer never moved
        record = next(r for r in _runs(second) if r["run_id"] == run_id)
        assert record["outcome"] == "failed", record
        assert f"got {sig.name}" in record["reason"] and "backtest" in record["reason"]
    finally:
        second.close()
