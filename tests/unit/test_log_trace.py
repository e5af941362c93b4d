"""Every log line written while a request or event is handled carries its trace: as the
trace id, and where Cloud Logging reads it, so one search finds the run's lines."""

from __future__ import annotations

import json
import logging

from milkprice import logs, tracing
from milkprice.tracing import TraceContext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _line(formatter: logging.Formatter) -> dict[str, str]:
    record = logging.LogRecord("milkprice.train", logging.INFO, __file__, 1, "hello", (), None)
    return dict(json.loads(formatter.format(record)))


def test_a_line_inside_a_trace_names_it_and_one_outside_does_not() -> None:
    formatter = logs.JsonFormatter("train")
    with tracing.continued("milkprice-train", "run", TraceContext(TRACE, "00f067aa0ba902b7", True)):
        inside = _line(formatter)
    outside = _line(formatter)
    assert inside["trace_id"] == TRACE
    assert inside[logs.TRACE_KEY] == f"projects/local-project/traces/{TRACE}"
    assert "trace_id" not in outside and logs.TRACE_KEY not in outside
