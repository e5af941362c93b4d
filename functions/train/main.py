"""Train function: an HTTP trigger (manual calls and the scheduler) and event triggers.

``train_event`` is the Eventarc storage trigger (a CloudEvent function); ``train_events`` is
an HTTP function that takes every platform's event shape (``milkprice.train.triggers``) on
any path, ``/events`` included. ``train_service`` is the container image's one target, the
same on every platform: a health answer on GET, events under ``/events``, the HTTP trigger
elsewhere. Thin on purpose: who may ask and what is asked is ``milkprice.train.endpoint``'s
(the train token, checked by every target that can start a run, and the bucket); here the
request is read, ``milkprice.train.runner.run`` called and the answer shaped.
"""

from __future__ import annotations

from typing import Any

import cloudevents.exceptions
import flask
import functions_framework
from cloudevents.http import CloudEvent

from milkprice import contract, logs, settings
from milkprice.errors import BadRequest, MilkPriceError, to_response
from milkprice.train import endpoint, triggers

endpoint.setup("train")  # JSON logs, and a warning at start-up when no train token is set


def _settings() -> settings.Settings:
    logs.setup("train")
    return settings.load()


def _run(trigger: str, event: dict[str, Any] | None = None) -> contract.RunRecord:
    from milkprice.train import runner  # heavy (pandas, scikit-learn): imported on first run

    return runner.run(_settings(), trigger, event)


def _refused(exc: MilkPriceError) -> flask.Response:
    status, body, headers = to_response(exc)
    return flask.make_response(flask.jsonify(body), status, headers)


@functions_framework.http
def train_http(request: flask.Request) -> flask.Response:
    """POST starts a run and answers its run record."""
    try:
        trigger = endpoint.http_trigger(
            _settings(), request.method, request.headers, request.get_data
        )
        record = _run(trigger)
    except MilkPriceError as exc:
        return _refused(exc)
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
    files or a schedule start a run, a handshake is answered, anything else is a 400. With a
    train token set, everything but a handshake must carry it."""
    try:
        body = request.get_data(cache=False)
        found = endpoint.event(_settings(), request.method, request.headers, body)
        status, answer, headers = _answer(found)
    except MilkPriceError as exc:
        status, answer, headers = to_response(exc)
    return flask.make_response(flask.jsonify(answer) if answer is not None else "", status, headers)


@functions_framework.cloud_event
def train_event(event: CloudEvent) -> None:
    """A new object in the bucket; only new generations of the raw files train. The request
    is Flask's, as in any function of the Functions Framework: its token is checked too."""
    try:
        found = endpoint.storage_event(
            _settings(), flask.request.headers, event.get_attributes(), event.data
        )
    except MilkPriceError as exc:
        flask.abort(_refused(exc))
    if found is None:
        return
    record = _run("upload", found.event())
    if _redeliver(record):
        raise RuntimeError(f"run {record.run_id} {record.outcome}: {record.reason}")


@functions_framework.errorhandler(RecursionError)
@functions_framework.errorhandler(cloudevents.exceptions.GenericException)
def _unreadable(exc: Exception) -> flask.Response:
    """The Functions Framework decodes a CloudEvent before ``train_event`` sees it: a body it
    cannot read (nested past the decoder's limit, say) is the sender's fault, a 400 that
    platforms do not redeliver, not an HTML 500 that they do."""
    return _refused(BadRequest(endpoint.UNREADABLE, [{"problem": type(exc).__name__}]))


# Where the AWS Lambda Web Adapter posts non-HTTP events (its AWS_LWA_PASS_THROUGH_PATH); the
# other platforms' subscriptions name this path too.
EVENTS_PATH = "/events"


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
    nothing; a request to ``/events`` (or below it) is an event (``train_events``); any other
    POST is the HTTP trigger (``train_http``). Both ask for the train token when one is set."""
    if request.method in ("GET", "HEAD"):
        return _health()
    path = request.path.rstrip("/")
    if path == EVENTS_PATH or path.startswith(EVENTS_PATH + "/"):
        return flask.make_response(train_events(request))
    return flask.make_response(train_http(request))
