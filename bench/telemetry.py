"""What metrics and tracing cost serving: 1-row ``/predict`` at c=1 and c=8 on four servers
started side by side: predict with both on (every request counted, its spans exported to a
local OTLP receiver), the same predict with both off, the bare function, and the floor of
serving through ONNX (``bench/floor``: read, parse, one ONNX Runtime call, answer; nothing
checked), which says how much of the bare function's throughput any ONNX server keeps. Each
round measures the four in turn, so that all see the same noise; the medians of the rounds
count.

Then the same again on one core, where the machine has two or more: each server on one CPU,
wrk on another, as a function's instance of one vCPU with its callers elsewhere. Unpinned, on
a machine of two cores, the load generator and the server take turns on both, and one
server's c=8 figure moves by up to a tenth between rounds; pinned, by about a hundredth. Its
figures have no target: the targets stand as the issue measured them, unpinned.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from milkprice.local import processes
from milkprice.local.trace_receiver import receiver

if TYPE_CHECKING:
    from bench.run import Bench

CASES = ("1 row /predict c=1", "1 row /predict c=8")
OFF = {"MILKPRICE_METRICS": "off"}  # no OTEL_* either: nothing traced
BARE_TARGET = 0.8  # with both on: at least this share of the bare function's req/s
OFF_TARGET = 0.95  # and at most 5% below the same server with both off


def _servers(
    bench: Bench, endpoint: str, started: list[Any], cpus: set[int] | None
) -> dict[str, str]:
    """The four servers, started (into ``started``, on ``cpus``) and answering: their URLs."""
    from bench.run import HOST, on_cpus, wait_for

    # batches sent every second, not every five: a smoke run's rounds are shorter than five
    # seconds, and its servers are stopped before a batch that waits would go out
    on = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "milkprice-predict",
        "OTEL_BSP_SCHEDULE_DELAY": "1000",
    }
    plan = {
        "on": ("predict", on),
        "off": ("predict", OFF),
        "bare": ("ceiling", {}),
        "floor": ("floor", {}),
    }
    urls = {}
    for label, (name, extra) in plan.items():
        port = processes.free_port()
        with on_cpus(cpus):
            proc = bench.start(name, port, **extra)
        started.append(proc)
        urls[label] = f"http://{HOST}:{port}"
        # ready when: predict says so (a GET); the ceiling answers any POST; the floor
        # scores the first case's body, which loads its model as its first request would
        probe = "/v2/health/ready" if name == "predict" else "/"
        body = {"predict": None, "ceiling": b"{}"}.get(name, bench.plan[0].body)
        wait_for(bench.procs, proc, _answers(urls[label] + probe, body))
    return urls


def _answers(url: str, body: bytes | None) -> Callable[[], bool]:
    from bench.run import call

    return lambda: call(url, body)[0] == 200


def _case(
    bench: Bench, urls: dict[str, str], case_name: str, cpus: set[int] | None
) -> dict[str, Any]:
    """Req/s of one case on each server (wrk on ``cpus``), median of the rounds."""
    from bench.run import WARMUP, call, wrk

    [case] = [c for c in bench.plan if c.name == case_name]
    sent = bench.file("telemetry-body.json", case.body)
    expect = {}
    for label, url in urls.items():
        status, _, answer = call(url + case.path, case.body)
        right = case.correct(answer) if label != "bare" else status == 200
        if status != 200 or not right:
            raise RuntimeError(f"telemetry {label} {case_name}: {status} {answer[:300]!r}")
        expect[label] = bench.file(f"telemetry-expect-{label}.json", answer)
        wrk(url + case.path, sent, expect[label], case.concurrency, WARMUP, cpus=cpus)
    rounds: dict[str, list[float]] = {label: [] for label in urls}
    for i in range(3):
        for label, url in urls.items():
            seconds = bench.config.seconds
            got = wrk(url + case.path, sent, expect[label], case.concurrency, seconds, cpus=cpus)
            if got["errors"]:
                bench.errors.append(f"telemetry {label} {case_name}: {got['errors']} errors")
            rounds[label].append(got["req_per_s"])
        where = " (one core)" if cpus else ""
        bench.say(f"telemetry {case_name}{where} round {i + 1}/3: {_shown(rounds)}")
    found: dict[str, Any] = {label: statistics.median(v) for label, v in rounds.items()}
    found["rounds"] = rounds
    return found


def _shown(rounds: dict[str, list[float]]) -> str:
    return ", ".join(f"{label} {v[-1]:.0f} req/s" for label, v in rounds.items())


def _two_cpus() -> tuple[set[int], set[int]] | None:
    """(the servers' CPU, wrk's) for the pass on one core; None with fewer than two."""
    mine = sorted(os.sched_getaffinity(0))
    return ({mine[0]}, {mine[1]}) if len(mine) >= 2 else None


def _measured(
    bench: Bench, endpoint: str, cpus: tuple[set[int], set[int]] | None
) -> dict[str, Any]:
    """Both cases on four servers started for them (on ``cpus``: servers', wrk's)."""
    started: list[Any] = []
    try:
        urls = _servers(bench, endpoint, started, cpus[0] if cpus else None)
        return {case: _case(bench, urls, case, cpus[1] if cpus else None) for case in CASES}
    finally:
        for proc in started:
            bench.procs.stop(proc)


def run(bench: Bench) -> dict[str, Any]:
    """Each case's req/s with both on, both off, bare and the floor, then the same on one
    core (``"one core"``: None on a machine of one), and the spans the receiver got."""
    with receiver() as (endpoint, received):
        found: dict[str, Any] = _measured(bench, endpoint, None)
        cpus = _two_cpus()
        found["one core"] = _measured(bench, endpoint, cpus) if cpus else None
        found["spans_received"] = len(received.spans)
    if not found["spans_received"]:
        bench.errors.append("telemetry: the receiver got no span from the traced server")
    return found


def targets(found: dict[str, Any]) -> dict[str, tuple[float, str, float, int]]:
    """(value, target as text, limit, sense: 1 at least) for the report's targets."""
    checks = {}
    for case in CASES:
        f, short = found[case], case.replace(" /predict", "")
        checks[f"{short} traced / bare"] = (
            f["on"] / f["bare"],
            f"≥ {BARE_TARGET} x bare function",
            BARE_TARGET,
            1,
        )
        checks[f"{short} traced / off"] = (
            f["on"] / f["off"],
            f"≥ {OFF_TARGET} x off",
            OFF_TARGET,
            1,
        )
    return checks


def rows(found: dict[str, Any]) -> list[tuple[str, float, float, str, str]]:
    """(measure, predict, reference, reference name, target) for the report's table."""
    lines: list[tuple[str, float, float, str, str]] = []
    if not found:
        return lines
    for case in CASES:
        f, short = found[case], case.replace(" /predict", "")
        on = f"{case}, metrics and tracing on: req/s"
        lines.append((on, f["on"], f["bare"], "(bare function)", f"{short} traced / bare"))
        lines.append((on, f["on"], f["off"], "(both off)", f"{short} traced / off"))
        floor = f"{case}, the floor of ONNX serving (nothing checked): req/s"
        lines.append((floor, f["floor"], f["bare"], "(bare function)", ""))
    for case in CASES if found.get("one core") else ():
        f = found["one core"][case]
        on = f"{case}, one core, metrics and tracing on: req/s"
        lines.append((on, f["on"], f["bare"], "(bare function)", ""))
        lines.append((on, f["on"], f["off"], "(both off)", ""))
        floor = f"{case}, one core, the floor of ONNX serving: req/s"
        lines.append((floor, f["floor"], f["bare"], "(bare function)", ""))
    return lines
