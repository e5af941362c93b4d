"""The train function on AWS Lambda: what each kind of invocation asks for, and its answer.

- An HTTP event (a Function URL, an HTTP API) goes to the image's one target,
  ``train_service`` (health on GET, events under ``/events``, the HTTP trigger elsewhere),
  through ``milkprice.lambda_http``.
- A batch of SQS messages (S3 event notifications through a queue, delivered by Lambda's event
  source mapping): every message is read as ``train_events`` reads a body; the new raw objects
  of the whole batch start one run, as one event naming them all does. The answer reports
  partial batch failures (``ReportBatchItemFailures``): the messages of a run that failed in
  a way a retry can help are listed, so only they come back; a message of no known shape is
  logged and not retried (it would fail the same way forever).
- Anything else is an event invoked directly: an S3 event notification, EventBridge's
  ``Object Created``, EventBridge Scheduler's ``{"trigger": "schedule"}``, or
  ``{"trigger": "http"}`` for a manual run. It answers the run record (or what was ignored);
  a run that failed in a way a retry can help raises, so that Lambda retries an asynchronous
  invocation, and a body of no known shape raises the 400 ``train_events`` would answer.

The same claims keep a redelivered event from training twice (``runner``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from milkprice import contract, lambda_http, settings, tracing
from milkprice.errors import MilkPriceError
from milkprice.train import endpoint, triggers

log = logging.getLogger("milkprice.train.lambda")

JSON = {"Content-Type": "application/json"}
Handler = Callable[[Any, Any], Any]


class RunFailed(Exception):
    """A run failed in a way a retry can help: raised so that Lambda delivers the event again."""


def _run(
    trigger: str, event: dict[str, Any] | None, trace_header: str | None = None
) -> contract.RunRecord:
    """A run as every target of main.py starts one, in the trace Lambda passed: a message's
    ``AWSTraceHeader`` (SQS), else the invocation's own (``_X_AMZN_TRACE_ID``)."""
    header = trace_header or os.environ.get("_X_AMZN_TRACE_ID", "")
    caller = tracing.incoming({"X-Amzn-Trace-Id": header})
    return endpoint.run(settings.load(), trigger, event, caller)


def _redeliver(record: contract.RunRecord) -> bool:
    """As ``train_events``: storage away, say; not bad data, which would fail again."""
    return record.outcome == "failed" and record.error is not None and bool(record.error.retryable)


def _read(body: Any) -> triggers.Trigger:
    """What a decoded event asks for, as ``train_events`` reads the same body."""
    return triggers.parse("POST", JSON, json.dumps(body).encode())


# ---------------------------------------------------------------- SQS: a batch


def _is_batch(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        return False
    return all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)


def _sort(records: list[dict[str, Any]]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The message ids of the batch by the run they ask for, and each run's event."""
    asked: dict[str, list[str]] = {"upload": [], "schedule": []}
    uploads: list[triggers.Upload] = []
    events: dict[str, Any] = {}
    for record in records:
        message = str(record.get("messageId", ""))
        try:
            found = _read({"Records": [record]})
        except MilkPriceError as exc:
            log.error("SQS message %s is no event taken here, not retried: %s", message, exc)
            continue
        if isinstance(found, triggers.Uploads):
            asked["upload"].append(message)
            uploads += found.items
            events["upload"] = triggers.Uploads(tuple(uploads)).event()
        elif isinstance(found, triggers.Schedule):
            asked["schedule"].append(message)
            events["schedule"] = found.event()
        else:
            log.info("SQS message %s: nothing to train (%s)", message, _why(found))
    return asked, events


def _batch(event: dict[str, Any]) -> dict[str, Any]:
    """One run for the batch's uploads, one for its schedules; the failures a retry can help."""
    asked, events = _sort(event["Records"])
    trace = _first_trace(event["Records"])
    failed: list[str] = []
    for trigger, messages in asked.items():
        if not messages:
            continue
        record = _run(trigger, events[trigger], trace)
        log.info("SQS messages %s: run %s %s", ", ".join(messages), record.run_id, record.outcome)
        if _redeliver(record):
            failed += messages
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}


def _first_trace(records: list[dict[str, Any]]) -> str | None:
    """The trace the batch's first traced message carries (SQS's ``AWSTraceHeader``): one
    run covers the batch, so it goes on in one trace."""
    for record in records:
        attributes = record.get("attributes")
        if isinstance(attributes, dict) and attributes.get("AWSTraceHeader"):
            return str(attributes["AWSTraceHeader"])
    return None


# ---------------------------------------------------------------- one event, invoked directly


def _why(found: triggers.Trigger) -> str:
    return found.reason if isinstance(found, triggers.Ignored) else type(found).__name__


def _direct(event: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("trigger") == "http":
        record = _run("http", None)
    else:
        found = _read(event)  # BadRequest, raised: no known shape, with the shapes taken
        if isinstance(found, triggers.Uploads):
            record = _run("upload", found.event())
        elif isinstance(found, triggers.Schedule):
            record = _run("schedule", found.event())
        else:
            return {"ignored": _why(found)}
    if _redeliver(record):
        raise RunFailed(f"run {record.run_id} failed, a retry may help: {record.reason}")
    return contract.to_builtins(record)  # type: ignore[no-any-return]


def handler(source: str | os.PathLike[str]) -> Handler:
    """The train function's Lambda handler; HTTP events go to ``train_service`` of
    ``source`` (the function's ``main.py``)."""
    http = lambda_http.handler(source, "train_service")

    def handle(event: Any, context: Any) -> Any:
        if lambda_http.is_http(event):
            return http(event, context)
        if _is_batch(event):
            return _batch(event)
        return _direct(event)

    return handle
