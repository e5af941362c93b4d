"""The caller's trace read from each header a caller or a cloud sends, and nothing of
OpenTelemetry loaded while no OTLP endpoint is set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from milkprice import tracing
from milkprice.tracing import TraceContext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": f"00-{TRACE}-{SPAN}-01"}, TraceContext(TRACE, SPAN, True)),
        ({"Traceparent": f"00-{TRACE}-{SPAN}-00"}, TraceContext(TRACE, SPAN, False)),
        # a later version's extra fields are allowed, as the W3C says
        ({"traceparent": f"01-{TRACE}-{SPAN}-03-more"}, TraceContext(TRACE, SPAN, True)),
        (
            {"X-Cloud-Trace-Context": f"{TRACE.upper()}/{int(SPAN, 16)};o=1"},
            TraceContext(TRACE, SPAN, True),
        ),
        ({"x-cloud-trace-context": TRACE}, TraceContext(TRACE, "", False)),
        (
            {"X-Amzn-Trace-Id": f"Root=1-{TRACE[:8]}-{TRACE[8:]};Parent={SPAN};Sampled=1"},
            TraceContext(TRACE, SPAN, True),
        ),
        (
            {"X-Amzn-Trace-Id": f"Self=1-aa-bb;Root=1-{TRACE[:8]}-{TRACE[8:]}"},
            TraceContext(TRACE, "", False),
        ),
    ],
)
def test_each_header_s_trace_is_read(headers: dict[str, str], expected: TraceContext) -> None:
    assert tracing.incoming(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": f"ff-{TRACE}-{SPAN}-01"},  # version ff is invalid
        {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},  # all-zero ids are invalid
        {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
        {"traceparent": f"00-{TRACE[:-1]}-{SPAN}-01"},
        {"X-Cloud-Trace-Context": "not-a-trace/1;o=1"},
        {"X-Amzn-Trace-Id": "Root=2-abc;Sampled=1"},
    ],
)
def test_a_malformed_trace_is_no_trace(headers: dict[str, str]) -> None:
    assert tracing.incoming(headers) is None


def test_w3c_comes_first_then_google_then_aws() -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    aws = {"X-Amzn-Trace-Id": f"Root=1-{other[:8]}-{other[8:]};Sampled=1"}
    google = {"X-Cloud-Trace-Context": f"{other}/7;o=1"}
    w3c = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    assert tracing.incoming({**aws, **google, **w3c}) == TraceContext(TRACE, SPAN, True)
    assert tracing.incoming({**aws, **google}) == TraceContext(other, f"{7:016x}", True)
    # a bad header of the first kind does not hide a good one of the next
    assert tracing.incoming({"traceparent": "junk", **aws}) == TraceContext(other, "", True)


def test_without_an_endpoint_the_trace_goes_on_and_nothing_is_exported() -> None:
    for name in (*tracing.ENDPOINTS, "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"):
        os.environ.pop(name, None)
    caller = TraceContext(TRACE, SPAN, True)
    assert tracing.trace_id() is None
    with tracing.continued("test", "request", caller) as here:
        assert here == caller and tracing.trace_id() == TRACE
        with tracing.span("stage"):
            assert tracing.trace_id() == TRACE
    assert tracing.trace_id() is None


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_export_is_on_only_where_an_endpoint_says(
    variables: dict[str, str], expected: bool
) -> None:
    for name in (*tracing.ENDPOINTS, "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"):
        os.environ.pop(name, None)
    os.environ.update(variables)
    assert tracing.enabled() is expected


def test_no_opentelemetry_module_is_imported_while_export_is_off() -> None:
    code = (
        "import sys\n"
        "from milkprice import tracing\n"
        "with tracing.continued('t', 'r', tracing.incoming({'traceparent': sys.argv[1]})):\n"
        "    with tracing.span('s'):\n"
        "        assert tracing.trace_id()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code, f"00-{TRACE}-{SPAN}-01"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_with_export_on_the_caller_s_trace_goes_on_even_without_its_span() -> None:
    """Each header's trace id is the root span's, and a child span's; with no header a trace
    of its own starts. The spans go to a closed port: only their ids are looked at here."""
    code = (
        "import os, sys\n"
        "from milkprice import tracing\n"
        "for value in sys.argv[1:]:\n"
        "    name, _, header = value.partition(':')\n"
        "    caller = tracing.incoming({name: header} if header else {})\n"
        "    with tracing.continued('t', 'r', caller) as here:\n"
        "        with tracing.span('s'):\n"
        "            own = here.span_id != (caller and caller.span_id)\n"
        "            print(here.trace_id, tracing.trace_id(), own)\n"
        "sys.stdout.flush()\n"
        "os._exit(0)  # no waiting on the closed port at exit\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    headers = [
        f"traceparent:00-{TRACE}-{SPAN}-01",
        f"X-Cloud-Trace-Context:{TRACE}",
        f"X-Amzn-Trace-Id:Root=1-{TRACE[:8]}-{TRACE[8:]};Sampled=1",
        "none:",
    ]
    done = subprocess.run(
        [sys.executable, "-c", code, *headers], capture_output=True, text=True, env=env, check=True
    )
    lines = [line.split() for line in done.stdout.splitlines()]
    assert [line[:2] for line in lines[:3]] == [[TRACE, TRACE]] * 3
    assert all(line[2] == "True" for line in lines)  # a span of its own, under the caller's
    assert lines[3][0] == lines[3][1] != TRACE and len(lines[3][0]) == 32


@pytest.mark.parametrize(
    ("caller", "ratio", "kept"),
    [
        (TraceContext(TRACE, SPAN, True), 0.0, True),  # the caller's span decided
        (TraceContext(TRACE, SPAN, False), 1.0, False),
        (None, 0.0, False),
        (None, 1.0, True),
        # no span: the trace id's last 16 hex digits against the ratio, as the SDK's sampler
        (TraceContext("f" * 16 + "0" * 15 + "1", "", False), 0.5, True),
        (TraceContext("0" * 16 + "f" * 16, "", True), 0.5, False),
    ],
)
def test_a_trace_is_kept_by_the_rule_of_its_sampler(
    caller: TraceContext | None, ratio: float, kept: bool
) -> None:
    os.environ.pop("OTEL_TRACES_SAMPLER", None)
    tracing.reset()  # the OTEL_* variables are read once per process, and again after this
    assert tracing._kept(caller, ratio) is kept
    os.environ["OTEL_TRACES_SAMPLER"] = "always_off"  # then the SDK's sampler decides
    tracing.reset()
    assert tracing._kept(caller, ratio) is True


def test_a_trace_not_kept_loads_nothing_of_opentelemetry_even_with_export_on() -> None:
    code = (
        "import sys\n"
        "from milkprice import tracing\n"
        "for _ in range(100):\n"
        "    with tracing.continued('t', 'r', None, 0.0):\n"
        "        with tracing.span('s'):\n"
        "            pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"
