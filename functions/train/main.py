"""Train function: an HTTP trigger (manual calls and the scheduler) and event triggers.

``train_event`` is the Eventarc storage trigger (a CloudEvent function); ``train_events`` is
an HTTP function that takes every platform's event shape (``milkprice.train.triggers``) on
any path, ``/events`` included. ``train_service`` is the container image's one target, the
same on every platform: a health answer on GET, events under ``/events``, the HTTP trigger
elsewhere. Thin on purpose: parse the request, call ``milkprice.train.runner.run``, shape
the answer.
"""

from __future__ import annotations

import hmac
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from milkprice import contract, logs, settings
from milkprice.errors import BadRequest, MethodNotAllowed, MilkPriceError, Unauthorized, to_response
from milkprice.train import triggers


def _settings() -> settings.Settings:
    logs.setup("train")
    return settings.load()


def _run(trigger: str, event: dict[str, Any] | None = None) -> contract.RunRecord:
    from milkprice.train import runner  # heavy (pandas, scikit-learn): imported on first run

    return runner.run(_settings(), trigger, event)


def _authorize(request: flask.Request) -> None:
    token = _settings().train_token
    sent = request.headers.get("Authorization", "")
    if token and not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")


def _check(request: flask.Request) -> str:
    if request.method != "POST":
        raise MethodNotAllowed("POST starts a training run")
    _authorize(request)
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


def _redeliver(record: contract.RunRecord) -> bool:
    """Storage away, say, or the event's raw versions held by a run not yet finished: fail so
    the delivery is retried. Bad data, a model that does not export exactly or a bug would
    fail the same way again: those are acknowledged, their record keeping the error."""
    return record.error is not None and bool(record.error.retryable)


def _status(record: contract.RunRecord) -> tuple[int, dict[str, str]]:
    """200 acknowledges the event; a 5xx makes every platform deliver it again (503 with
    Retry-After while another run holds its raw versions)."""
    if not _redeliver(record):
        return 200, {}
    wait = record.error.retry_after if record.error else 0
    return (503, {"Retry-After": str(wait)}) if wait else (500, {})


def _answer(found: triggers.Trigger) -> tuple[int, Any, dict[str, str]]:
    """Status, JSON body (None: empty) and headers for what an event asked for."""
    if isinstance(found, triggers.Validation):
        return 200, found.answer, found.headers or {}
    if isinstance(found, triggers.Ignored):
        return 200, {"ignored": found.reason}, {}
    record = _run("upload" if isinstance(found, triggers.Uploads) else "schedule", found.event())
    status, headers = _status(record)
    return status, contract.to_builtins(record), headers


@functions_framework.http
def train_events(request: flask.Request) -> flask.Response:
    """An event from any platform (see ``milkprice.train.triggers``), on any path: new raw
    files or a schedule start a run, a handshake is answered, anything else is a 400."""
    try:
        body = request.get_data(cache=False)
        status, answer, headers = _answer(
            triggers.parse(request.method, dict(request.headers.items()), body)
        )
    except MilkPriceError as exc:
        status, answer, headers = to_response(exc)
    return flask.make_response(flask.jsonify(answer) if answer is not None else "", status, headers)


@functions_framework.cloud_event
def train_event(event: CloudEvent) -> None:
    """A new object in the bucket; only new generations of the raw files train."""
    try:
        found = triggers.cloudevent(event.get_attributes(), event.data)
    except BadRequest:
        return  # not a use of this trigger: answered, so that it is not redelivered
    if not isinstance(found, triggers.Upload):
        return
    record = _run("upload", triggers.Uploads((found,)).event())
    if _redeliver(record):
        raise RuntimeError(f"run {record.run_id} {record.outcome}: {record.reason}")


# Where the AWS Lambda Web Adapter posts non-HTTP events (its AWS_LWA_PASS_THROUGH_PATH); the
# other platforms' subscriptions name this path too.
EVENTS_PATH = "/events"


def _refused(exc: MilkPriceError) -> flask.Response:
    status, body, headers = to_response(exc)
    return flask.make_response(flask.jsonify(body), status, headers)


def _health() -> flask.Response:
    """Cheap: the settings are read (a bad MILKPRICE_* variable fails the probe), nothing
    is trained and the bucket is not called."""
    try:
        s = _settings()
    except MilkPriceError as exc:
        return _refused(exc)
    return flask.jsonify({"live": True, "function": "train", "cloud": s.cloud, "bucket": s.bucket})


@functions_framework.http
def train_service(request: flask.Request) -> flask.Response:
    """The train image's one target. GET or HEAD on any path answers health and trains
    nothing; a request to ``/events`` (or below it) is an event (``train_events``), which
    must carry the train token when one is set, a webhook handshake excepted; any other POST
    is the HTTP trigger (``train_http``)."""
    if request.method in ("GET", "HEAD"):
        return _health()
    path = request.path.rstrip("/")
    if path != EVENTS_PATH and not path.startswith(EVENTS_PATH + "/"):
        return flask.make_response(train_http(request))
    if request.method != "OPTIONS":  # the handshake starts nothing and carries no token
        try:
            _authorize(request)
        except MilkPriceError as exc:
            return _refused(exc)
    return flask.make_response(train_events(request))
