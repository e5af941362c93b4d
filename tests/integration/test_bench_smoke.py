"""`make bench BENCH_SECONDS=1`: the benchmark's smoke run ends well and reports every case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT


@pytest.mark.slow
@pytest.mark.bench
def test_bench_smoke_run(tmp_path: Path) -> None:
    if shutil.which("wrk") is None and os.geteuid() != 0:
        pytest.skip("wrk is not installed and installing it (apt-get install -y wrk) needs root")
    results = tmp_path / "results.json"
    env = {**os.environ, "BENCH_SECONDS": "1", "BENCH_RESULTS": str(results)}
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = bench.communicate(timeout=420)  # a smoke run takes about 110 s
    except subprocess.TimeoutExpired:
        bench.terminate()  # on SIGTERM the bench stops every process it started
        out, err = bench.communicate()
        pytest.fail(f"the smoke run took over 420 s:\n{err[-5000:]}")
    assert bench.returncode == 0, out[-3000:] + err[-5000:]
    doc = json.loads(results.read_text())
    assert doc["mode"] == "smoke"
    cases = doc["cases"]
    assert len(cases) == 11  # five cases on each server, and the soak
    assert {name.split()[0] for name in cases} == {"predict", "ceiling"}
    for name, case in cases.items():
        assert case["req_per_s"] > 0, name
        assert case["errors"] == 0, (name, case)
    assert doc["errors"] == []
    assert all(run["median_s"] > 0 for run in doc["cold_start"].values())
    node = shutil.which("node") and shutil.which("npm")  # Azurite's, else skipped
    expected = {"gcp", "aws"} | ({"azure"} if node else set())
    assert set(doc["clouds"]) == expected
    for cloud, found in doc["clouds"].items():  # each ratio from figures of the same run
        assert found["cold_start_s"] > 0 and found["one_row_req_per_s"] > 0, cloud
        assert found["cold_start_ratio"] == pytest.approx(
            found["cold_start_s"] / found["bare_cold_start_s"], abs=1e-3
        )
        assert f"| {cloud}: cold start s |" in out
    lam = doc["lambda"]  # the predict handler under the emulator, beside a bare handler
    assert lam["cold_start_s"] > lam["bare_cold_start_s"] > 0
    assert lam["cold_start_ratio"] == pytest.approx(
        lam["cold_start_s"] / lam["bare_cold_start_s"], abs=1e-3
    )
    for name in ("predict", "bare"):
        warm = lam["warm"][name]
        assert warm["n"] > 0 and 0 < warm["p50_ms"] <= warm["p99_ms"], (name, warm)
    assert lam["p50_ratio"] == pytest.approx(
        lam["warm"]["predict"]["p50_ms"] / lam["warm"]["bare"]["p50_ms"], abs=1e-3
    )
    assert "| lambda: warm 1 row p99 ms |" in out
    for case in ("1 row /predict c=1", "1 row /predict c=8"):  # four servers side by side
        found = doc["telemetry"][case]
        assert all(found[label] > 0 for label in ("on", "off", "bare", "floor")), (case, found)
        assert f"| {case}, the floor of ONNX serving (nothing checked): req/s |" in out
        if len(os.sched_getaffinity(0)) < 2:  # no second CPU for wrk: no pass on one core
            assert doc["telemetry"]["one core"] is None
            continue
        pinned = doc["telemetry"]["one core"][case]  # the same, each server on one CPU
        assert all(pinned[label] > 0 for label in ("on", "off", "bare", "floor")), (case, pinned)
        assert f"| {case}, one core, the floor of ONNX serving: req/s |" in out
    assert doc["freshness"]["seconds"] > doc["freshness"]["training_seconds"] > 0
    assert set(doc["targets"]) and "| measure |" in out
