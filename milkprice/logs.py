"""Logs as one JSON object per line, in Cloud Logging's structured format."""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any

from milkprice import tracing

_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "INFO": "INFO"}
_EXTRA = ("run_id", "component", "version", "trigger")
# the key under which Cloud Logging reads a line's trace (as projects/<project>/traces/<id>)
TRACE_KEY = "logging.googleapis.com/trace"
# Libraries whose INFO lines are their own bookkeeping ("Adding job tentatively", connection
# pool notes), not news about milk prices: only their warnings and errors are logged.
QUIET = ("apscheduler", "urllib3", "google", "cloudevents", "botocore", "boto3", "azure")


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEBUG"),
            "message": record.getMessage(),
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "component": self.component,
            "logger": record.name,
        }
        for key in _EXTRA:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        trace = tracing.trace_id()
        if trace:  # the trace of the request or event being handled: one search finds all
            entry["trace_id"] = trace
            entry[TRACE_KEY] = f"projects/{_project()}/traces/{trace}"
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@functools.cache
def _project() -> str:
    """The project Cloud Logging files the traces under: the settings' (read once)."""
    from milkprice import settings

    try:
        return settings.load().project
    except Exception:  # a bad setting is reported where it is used, not by every log line
        return settings.Settings.project


def setup(component: str, level: int = logging.INFO) -> None:
    """Route the root logger to stdout as JSON lines, once per process.

    The project's ``milkprice.*`` loggers log at ``level``; the libraries in ``QUIET`` only from
    WARNING up.
    """
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(component))
    logging.Formatter.converter = __import__("time").gmtime
    root.handlers = [handler]
    root.setLevel(level)
