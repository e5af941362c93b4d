"""The local metrics and trace stack, for real (`make test-observe`; `make test` leaves it out).

Debian's Prometheus scrapes a tiny prometheus_client server and its HTTP API answers the exact
count; Phoenix receives spans from OpenTelemetry's own OTLP/HTTP exporter, configured only by
the variables `up --observe` gives the functions, and its API finds their trace; and
`milkprice up --observe` end to end: one POST /predict is counted in Prometheus and traced in
Phoenix, and the stop leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from milkprice import http_client as http
from milkprice.errors import StackError
from milkprice.local import processes
from milkprice.local.observability import prometheus, traces
from tests.support.paths import ROOT
from tests.support.stack import Stack

pytestmark = [pytest.mark.observe, pytest.mark.slow]

CACHE = ROOT / "var"  # the checkout's state folder: the package is unpacked there once, kept


def _json(url: str) -> Any:
    answer = http.request(url, timeout=10)
    assert answer.status == 200, (url, answer.status, answer.body[:500], answer.error)
    return json.loads(answer.body)


def _eventually(check: Callable[[], Any], limit: float, what: str | Callable[[], str]) -> Any:
    """``check()``'s first truthy answer within ``limit`` seconds; else fail saying ``what``
    (a callable: what is known by then, say the scrape targets' state)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what if isinstance(what, str) else what()}: not within {limit:.0f} s")


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    """Prometheus' instant query: its result vector."""
    document = _json(f"{url}/api/v1/query?query={quote(promql)}")
    assert document["status"] == "success", document
    return list(document["data"]["result"])


def _shared_package(state: Path) -> None:
    """``state`` gets the checkout's unpacked package: a test downloads it once, not per test."""
    prometheus.install(CACHE)
    prometheus.root(state).parent.mkdir(parents=True, exist_ok=True)
    prometheus.root(state).symlink_to(prometheus.root(CACHE), target_is_directory=True)


def _gone(proc: processes.Process) -> None:
    processes.stop([proc])
    assert not proc.alive() and not processes.group_members(proc.pid)


def test_prometheus_scrapes_a_counter_and_answers_its_exact_value(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    hits = Counter("observe_probe_hits", "Probe hits", ["route"], registry=registry)
    hits.labels(route="/a").inc(3)
    hits.labels(route="/b").inc()
    probe_port, metrics_port = processes.free_ports(2)
    server, _ = start_http_server(probe_port, addr="127.0.0.1", registry=registry)
    _shared_package(tmp_path)
    target = prometheus.Target("probe", f"127.0.0.1:{probe_port}")
    proc = prometheus.start(tmp_path, [target], "127.0.0.1", metrics_port, os.environ, seconds=1)
    url = f"http://127.0.0.1:{metrics_port}"
    try:
        processes.wait_until(lambda: prometheus.ready(url), proc, limit=60)
        promql = 'observe_probe_hits_total{job="probe", route="/a"}'
        (sample,) = _eventually(lambda: _query(url, promql), 30, "the first scrape")
        assert sample["value"][1] == "3" and sample["metric"]["service"] == "probe"
        hits.labels(route="/a").inc(2)  # the next scrapes see the new count
        _eventually(lambda: _query(url, promql)[0]["value"][1] == "5", 30, "the new count")
        (health,) = _json(f"{url}/api/v1/targets")["data"]["activeTargets"]
        assert health["health"] == "up" and health["labels"]["job"] == "probe"
        # the UI works from the unpacked packages: its page and an asset it links to
        graph = http.request(prometheus.graph_url(url), timeout=10)
        assert graph.status == 200
        for asset in re.findall(rb'src="(/classic/static/[^"?]+)', graph.body):
            assert http.request(url + asset.decode(), timeout=10).status == 200, asset
    finally:
        server.shutdown()
        _gone(proc)


def test_a_machine_without_the_package_list_is_told_to_run_apt_get_update(
    tmp_path: Path,
) -> None:
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    empty = [
        f"Dir::State::Lists={tmp_path / 'lists'}",
        "Dir::Cache::pkgcache=",
        "Dir::Cache::srcpkgcache=",
    ]
    with pytest.raises(StackError, match="apt-get update"):
        prometheus.install(tmp_path / "state", apt_options=empty)
    assert not prometheus.root(tmp_path / "state").exists()  # nothing half-unpacked is left


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Phoenix on free ports, as ``up --observe`` starts it; its URL."""
    port, grpc_port = processes.free_ports(2)
    state = tmp_path_factory.mktemp("phoenix")
    proc = traces.start(state, "127.0.0.1", port, grpc_port, os.environ)
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(lambda: traces.ready(url), proc, limit=traces.READY_SECONDS)
        yield url
    finally:
        _gone(proc)


def _spans(url: str, project: str) -> list[dict[str, Any]]:
    """Every span Phoenix holds in ``project`` (none when it has no such project yet)."""
    answer = http.request(f"{url}/v1/projects/{project}/spans?limit=1000", timeout=10)
    return list(json.loads(answer.body)["data"]) if answer.status == 200 else []


def test_phoenix_receives_spans_sent_over_otlp_http(
    phoenix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # exactly the variables a function of `up --observe` gets, and nothing else configured
    for name, value in traces.otel_environment(phoenix, "milkprice-probe").items():
        monkeypatch.setenv(name, value)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as parent, tracer.start_as_current_span("score"):
        pass  # a request span and its child, as a function's request and its scoring
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    assert provider.force_flush(10_000)
    provider.shutdown()

    def ours() -> list[dict[str, Any]]:
        found = [
            s for s in _spans(phoenix, "milkprice-probe") if s["context"]["trace_id"] == trace_id
        ]
        return found if len(found) == 2 else []

    spans = {s["name"]: s for s in _eventually(ours, 30, f"trace {trace_id} in Phoenix")}
    assert spans["score"]["parent_id"] == spans["request"]["context"]["span_id"]
    assert spans["request"]["parent_id"] is None


def _url_after(stack: Stack, label: str) -> str:
    """The URL ``up`` printed after ``label``."""
    for line in stack.lines:
        if found := re.search(re.escape(label) + r" (http://[0-9.]+:\d+)", line):
            return found.group(1)
    raise AssertionError(f"no {label} URL in up's lines:\n" + "\n".join(stack.lines[-30:]))


def test_up_observe_counts_and_traces_a_prediction_and_stops_cleanly(tmp_path: Path) -> None:
    _shared_package(tmp_path / "state")
    stack = Stack(tmp_path, args=("--observe",))
    try:
        stack.wait_ready(timeout=600)
        metrics, phoenix = _url_after(stack, "Prometheus"), _url_after(stack, "Phoenix")
        body = (tmp_path / "state" / "example-request.json").read_bytes()
        sent = {"Content-Type": "application/json"}
        answer = http.request(stack.url("/predict"), body, sent, timeout=30, method="POST")
        assert answer.status == 200, answer.body[:500]

        promql = 'sum(milkprice_predict_requests_total{route="/predict"})'

        def counted() -> list[dict[str, Any]]:
            return [s for s in _query(metrics, promql) if s["value"][1] == "1"]

        def targets() -> str:
            found = _json(f"{metrics}/api/v1/targets")["data"]["activeTargets"]
            states = [(t["labels"]["job"], t["health"], t["lastError"]) for t in found]
            return f"the /predict request in Prometheus (targets: {states}; up said:\n{said()})"

        def said() -> str:
            return "\n".join(stack.lines[-25:])

        _eventually(counted, 60, targets)
        jobs = {
            t["labels"]["job"]: t["health"]
            for t in _json(f"{metrics}/api/v1/targets")["data"]["activeTargets"]
        }
        assert jobs == {
            "milkprice-predict": "up",
            "milkprice-train": "up",
            "milkprice-events": "up",
        }
        _eventually(
            lambda: _spans(phoenix, "milkprice-predict"), 60, lambda: "a predict span " + said()
        )
        under = stack.descendants()
    finally:
        stack.close()
    assert stack.proc.returncode == 0, "\n".join(stack.lines[-30:])
    assert not under & set(processes._live()), "a process of the stack outlived it"
