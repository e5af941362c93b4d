"""The predict function on each cloud's object store: cold start and 1-row serving.

The model the main run trained on Cloud Storage is copied, byte for byte, into a bucket on
moto's S3 server and one on Azurite; predict then starts with ``MILKPRICE_CLOUD`` set to that
cloud, so the model and the pointer come through that cloud's SDK. Each figure is a ratio to
the bare function measured beside it, alternating, in the same run; Cloud Storage's row is
the main run's own figures.
"""

from __future__ import annotations

import os
import shutil
import statistics
from typing import TYPE_CHECKING, Any

from milkprice import contract, store
from milkprice.local import object_stores, processes
from milkprice.settings import Settings

if TYPE_CHECKING:
    from bench.run import Bench

OTHERS = ("aws", "azure")
CASE = "1 row /predict c=1"
COLD_TARGET = 2.0  # predict's cold start, at most this many times the bare function's


def _serve_from(cloud: str, bench: Bench, env: dict[str, str]) -> None:
    """The main run's serving version, promoted in a bucket of the same name on ``cloud``."""
    version, files = object_stores.export_version(bench.settings)
    os.environ.update(env)  # this process's own store calls; the SDKs read only their own
    target = Settings(bucket=bench.settings.bucket, cloud=cloud)
    store.ensure_bucket(target)
    object_stores.import_version(target, version, files)
    seen = contract.read_pointer(target)
    contract.promote(target, version, "bench", seen[1] if seen else None)


def cold_rounds(bench: Bench, extra: dict[str, str], label: str) -> dict[str, Any]:
    """Cold starts of predict (started with ``extra``) and of the bare function, alternating
    round by round so that both see the same noise; the medians and their ratio."""
    cold: dict[str, list[float]] = {"predict": [], "ceiling": []}
    for i in range(bench.config.cold_runs):
        cold["predict"].append(round(bench.cold_once("predict", **extra), 3))
        cold["ceiling"].append(round(bench.cold_once("ceiling"), 3))
        bench.say(
            f"{label} cold start {i + 1}/{bench.config.cold_runs}: predict "
            f"{cold['predict'][-1]:.2f} s, bare function {cold['ceiling'][-1]:.2f} s"
        )
    predict_s, ceiling_s = (
        round(statistics.median(v), 3) for v in (cold["predict"], cold["ceiling"])
    )
    return {
        "cold_start_s": predict_s,
        "bare_cold_start_s": ceiling_s,
        "cold_start_ratio": round(predict_s / ceiling_s, 3),
        "cold_runs_s": cold,
    }


def measure(bench: Bench, cloud: str) -> dict[str, Any]:
    """Cold start and 1-row serving of predict on ``cloud``, each beside the bare function."""
    proc, env = object_stores.start_free(cloud, bench.procs.tmp / cloud)
    extra = {"MILKPRICE_CLOUD": cloud, **env}
    try:
        _serve_from(cloud, bench, env)
        found = cold_rounds(bench, extra, cloud)
        served = bench.serve_one(CASE, extra)
    finally:
        processes.stop([proc])
    return {
        **found,
        "one_row_req_per_s": served["predict"],
        "bare_one_row_req_per_s": served["ceiling"],
        "one_row_ratio": round(served["predict"] / served["ceiling"], 3),
    }


def cold_only(bench: Bench) -> dict[str, Any]:
    """``BENCH_ONLY=cold``: every cloud's cold start beside the bare function's, with metrics
    and tracing on as a deployment runs them (spans exported over OTLP to a local port that
    accepts nothing: the export happens after the first answer, so only its set-up counts)."""
    tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{processes.free_port()}"}
    found = {"gcp": cold_rounds(bench, tracing, "gcp")}
    for cloud in OTHERS:
        if cloud == "azure" and not (shutil.which("node") and shutil.which("npm")):
            bench.say("azure: skipped, Azurite needs Node.js and npm")
            continue
        proc, env = object_stores.start_free(cloud, bench.procs.tmp / cloud)
        try:
            _serve_from(cloud, bench, env)
            found[cloud] = cold_rounds(bench, {"MILKPRICE_CLOUD": cloud, **env, **tracing}, cloud)
        finally:
            processes.stop([proc])
    for cloud, f in found.items():
        bench.say(f"{cloud}: cold start {f['cold_start_ratio']:.2f} x the bare function")
    return found


def cold_table(found: dict[str, Any]) -> str:
    """The cold-start section's markdown table: each cloud beside its own bare function."""
    lines = [
        "| cloud | predict cold start s | bare function s | ratio | target | result |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for cloud, f in found.items():
        ratio = f["cold_start_ratio"]
        result = "PASS" if ratio <= COLD_TARGET else "FAIL"
        lines.append(
            f"| {cloud} | {f['cold_start_s']:.3f} | {f['bare_cold_start_s']:.3f} | {ratio:.2f}"
            f" | ≤ {COLD_TARGET:g} x bare | {result} |"
        )
    return "\n".join(lines)


def gcp_row(results: dict[str, Any]) -> dict[str, Any]:
    """Cloud Storage's figures, from the main run."""
    cold, cases = results["cold_start"], results["cases"]
    mine, bare = cases[f"predict {CASE}"]["req_per_s"], cases[f"ceiling {CASE}"]["req_per_s"]
    return {
        "cold_start_s": cold["predict"]["median_s"],
        "bare_cold_start_s": cold["ceiling"]["median_s"],
        "cold_start_ratio": round(cold["predict"]["median_s"] / cold["ceiling"]["median_s"], 3),
        "one_row_req_per_s": mine,
        "bare_one_row_req_per_s": bare,
        "one_row_ratio": round(mine / bare, 3),
    }


def run(bench: Bench) -> dict[str, Any]:
    """Every cloud's figures; Azure's only where Node.js and npm can run Azurite."""
    found = {"gcp": gcp_row(bench.results)}
    for cloud in OTHERS:
        if cloud == "azure" and not (shutil.which("node") and shutil.which("npm")):
            bench.say("azure: skipped, Azurite needs Node.js and npm")
            continue
        found[cloud] = measure(bench, cloud)
        bench.say(
            f"{cloud}: cold start {found[cloud]['cold_start_ratio']:.2f} x the bare function, "
            f"1 row c=1 {found[cloud]['one_row_ratio']:.2f} x its req/s"
        )
    return found


def rows(found: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(measure, predict, reference, reference name) for the report's table."""
    lines = []
    for cloud, f in found.items():
        lines.append(
            (f"{cloud}: cold start s", f["cold_start_s"], f["bare_cold_start_s"], "(bare function)")
        )
        lines.append(
            (
                f"{cloud}: 1 row c=1 req/s",
                f["one_row_req_per_s"],
                f["bare_one_row_req_per_s"],
                "(bare function)",
            )
        )
    return lines
