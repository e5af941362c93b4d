"""Train function: an HTTP trigger (manual calls and the scheduler) and a storage trigger.

Thin on purpose: parse the request, call ``milkprice.train.runner.run``, shape the answer.
"""

from __future__ import annotations

import hmac
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from milkprice import contract, logs, settings, store
from milkprice.errors import BadRequest, MethodNotAllowed, MilkPriceError, Unauthorized, to_response

FINALIZED = "google.cloud.storage.object.v1.finalized"


def _settings() -> settings.Settings:
    logs.setup("train")
    return settings.load()


def _run(trigger: str, event: dict[str, Any] | None = None) -> contract.RunRecord:
    from milkprice.train import runner  # heavy (pandas, scikit-learn): imported on first run

    return runner.run(_settings(), trigger, event)


def _check(request: flask.Request) -> str:
    if request.method != "POST":
        raise MethodNotAllowed("POST starts a training run")
    token = _settings().train_token
    sent = request.headers.get("Authorization", "")
    if token and not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
    body = request.get_json(silent=True) if request.content_length else None
    trigger = (body or {}).get("trigger", "http") if isinstance(body, dict) else "http"
    if trigger not in ("http", "schedule"):
        raise BadRequest("trigger must be 'http' or 'schedule'", [{"field": "trigger"}])
    return str(trigger)


@functions_framework.http
def train_http(request: flask.Request) -> flask.Response:
    """POST starts a run and answers its run record."""
    try:
        record = _run(_check(request))
    except MilkPriceError as exc:
        status, body, headers = to_response(exc)
        return flask.make_response(flask.jsonify(body), status, headers)
    status = record.error.status if record.error else 200  # the error's own status
    return flask.make_response(flask.jsonify(contract.to_builtins(record)), status)


@functions_framework.cloud_event
def train_event(event: CloudEvent) -> None:
    """A new object in the bucket; only new generations of the raw files train."""
    payload = event.data if isinstance(event.data, dict) else {}
    name = str(payload.get("name", ""))
    if event["type"] != FINALIZED or name.removeprefix(store.RAW_PREFIX) not in store.RAW_FILES:
        return
    record = _run(
        "upload", {"id": event["id"], "name": name, "generation": payload.get("generation")}
    )
    if record.outcome == "failed" and record.error is not None and record.error.retryable:
        # Storage away, say: fail so the delivery is retried. Bad data or a model that does
        # not export exactly would fail the same way again: those are not redelivered.
        raise RuntimeError(f"run {record.run_id} failed: {record.reason}")
