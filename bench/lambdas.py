"""The predict function on AWS Lambda's Runtime Interface Emulator: cold start and warm 1-row
latency, each beside a bare handler under the same emulator (``lambda_ceiling``).

Cold start: the emulator's process starts, then the first invocation (which starts the
runtime interface client and imports the handler, as Lambda's init does) until the answer is
a correct prediction (the bare handler: its first answer). Warm latency: sequential 1-row
``/predict`` invocations, the Function URL event posted straight to the emulator (no HTTP
front), for the serving case's seconds. The predict handler reads the main run's bucket.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import TYPE_CHECKING, Any

from milkprice import http_client as http
from milkprice.local import lambda_rie

if TYPE_CHECKING:
    from bench.run import Bench, Case

ROOTS = {"predict": "functions/predict", "bare": "bench/lambda_ceiling"}


def event(case: Case) -> dict[str, Any]:
    """The Function URL event of the case's request."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": case.path,
        "rawQueryString": "",
        "headers": {"host": "127.0.0.1", "content-type": "application/json"},
        "requestContext": {
            "http": {
                "method": "POST",
                "path": case.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "bench",
            }
        },
        "body": case.body.decode(),
        "isBase64Encoded": False,
    }


def _start(bench: Bench, name: str) -> lambda_rie.Emulator:
    from bench.run import ROOT

    log = bench.procs.tmp / f"lambda-{name}-{len(bench.procs.logs)}.log"
    env = bench.procs.env(OMP_NUM_THREADS="1", **lambda_rie.function_env(name, 30))
    found = lambda_rie.start(
        f"lambda-{name}", "lambda_function.handler", ROOT / ROOTS[name], env, log=log
    )
    pid = found.process.pid
    bench.procs.running.append(found.process.popen)
    bench.procs.names[pid], bench.procs.logs[pid] = f"lambda-{name}", log
    return found


def _right(bench: Bench, name: str, answer: http.Answer, rtol: float = 1e-6) -> bool:
    if answer.status != 200:
        return False
    doc = json.loads(answer.body)
    if not isinstance(doc, dict) or doc.get("statusCode") != 200:
        return False
    return name == "bare" or bench.plan[0].correct(doc["body"].encode(), rtol=rtol)


def cold_once(bench: Bench, name: str) -> float:
    """Emulator start to the first correct prediction."""
    from bench.run import BenchError

    started = time.perf_counter()
    found = _start(bench, name)
    try:
        answer = found.invoke(event(bench.plan[0]), timeout=120)
        took = time.perf_counter() - started
        if not _right(bench, name, answer):
            raise BenchError(f"lambda {name}: {answer.status} {answer.body[:300]!r}")
        return took
    finally:
        bench.procs.stop(found.process.popen)


def warm(bench: Bench, name: str) -> dict[str, Any]:
    """p50 and p99 of sequential warm 1-row invocations for the case's seconds."""
    from bench.run import BenchError

    found = _start(bench, name)
    try:
        sent = event(bench.plan[0])
        for _ in range(20):  # the cold start and the first calls out of the way
            found.invoke(sent, timeout=120)
        took: list[float] = []
        end = time.perf_counter() + bench.config.seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            answer = found.invoke(sent, timeout=30)
            took.append((time.perf_counter() - start) * 1000)
            if not _right(bench, name, answer, 1e-9):
                raise BenchError(f"lambda {name}: {answer.status} {answer.body[:300]!r}")
        cuts = statistics.quantiles(took, n=100, method="inclusive")
        return {"p50_ms": round(cuts[49], 3), "p99_ms": round(cuts[98], 3), "n": len(took)}
    finally:
        bench.procs.stop(found.process.popen)


def run(bench: Bench) -> dict[str, Any]:
    cold: dict[str, list[float]] = {"predict": [], "bare": []}
    for i in range(bench.config.cold_runs):
        for name, runs in cold.items():
            runs.append(round(cold_once(bench, name), 3))
        bench.say(
            f"lambda cold start {i + 1}/{bench.config.cold_runs}: predict "
            f"{cold['predict'][-1]:.2f} s, bare handler {cold['bare'][-1]:.2f} s"
        )
    latency = {name: warm(bench, name) for name in ("predict", "bare")}
    predict_s, bare_s = (round(statistics.median(cold[n]), 3) for n in ("predict", "bare"))
    found = {
        "cold_start_s": predict_s,
        "bare_cold_start_s": bare_s,
        "cold_start_ratio": round(predict_s / bare_s, 3),
        "cold_runs_s": cold,
        "warm": latency,
        "p50_ratio": round(latency["predict"]["p50_ms"] / latency["bare"]["p50_ms"], 3),
        "p99_ratio": round(latency["predict"]["p99_ms"] / latency["bare"]["p99_ms"], 3),
    }
    bench.say(
        f"lambda: cold start {found['cold_start_ratio']:.2f} x the bare handler's, warm 1 row "
        f"p50 {found['p50_ratio']:.2f} x, p99 {found['p99_ratio']:.2f} x"
    )
    return found


def rows(found: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(measure, predict, reference, reference name) for the report's table."""
    mine, bare = found["warm"]["predict"], found["warm"]["bare"]
    return [
        ("lambda: cold start s", found["cold_start_s"], found["bare_cold_start_s"], "(bare)"),
        ("lambda: warm 1 row p50 ms", mine["p50_ms"], bare["p50_ms"], "(bare handler)"),
        ("lambda: warm 1 row p99 ms", mine["p99_ms"], bare["p99_ms"], "(bare handler)"),
    ]
