"""What each target of the train function does with its request, and how it answers.

``functions/train/main.py`` declares the targets; each is one call here. ``http_trigger`` is
the HTTP trigger (manual calls and the scheduler); ``events`` takes every platform's event
shape (``triggers``) on any path; ``storage_event`` is the Eventarc storage trigger (a
CloudEvent function); ``service`` is the container image's one target, the same on every
platform: health on GET, events under ``/events``, the HTTP trigger elsewhere. Who may ask and
what is asked is ``endpoint``'s; here the request is read, ``runner.run`` called and the answer
shaped. Every target starts with :func:`endpoint.start` (logs, and the open-function warning),
on its first request rather than at import.
"""

from __future__ import annotations

from typing import Any

import flask
from cloudevents.http import CloudEvent

from milkprice import contract, metrics, settings, tracing
from milkprice.errors import BadRequest, MethodNotAllowed, MilkPriceError, to_response
from milkprice.train import endpoint, triggers
from milkprice.train import metrics as train_metrics

# Where the AWS Lambda Web Adapter posts non-HTTP events (its AWS_LWA_PASS_THROUGH_PATH); the
# other platforms' subscriptions name this path too.
EVENTS_PATH = "/events"
METRICS = "/metrics"


def _settings() -> settings.Settings:
    endpoint.start()
    return settings.load()


def scrape(request: flask.Request) -> flask.Response | None:
    """``GET /metrics`` on any target: the function's metrics (None: another request)."""
    if request.method not in ("GET", "HEAD") or request.path.rstrip("/") != METRICS:
        return None
    endpoint.start()
    try:
        body, kind = metrics.scrape(request.headers.get("Accept"))
    except MilkPriceError as exc:
        return refused(exc)
    return flask.Response(body, 200, {"Cache-Control": "no-store"}, content_type=kind)


def not_allowed(exc: Exception) -> flask.Response:
    """A method the target's route does not take: the storage trigger (a CloudEvent function)
    takes POST only, so its ``GET /metrics`` arrives here, and is answered; anything else is
    the JSON 405 every other answer of the function is."""
    found = scrape(flask.request)
    if found is not None:
        return found
    method, path = flask.request.method, flask.request.path
    return refused(MethodNotAllowed(f"{method} {path}: use POST", headers={"Allow": "POST"}))


def refused(exc: MilkPriceError) -> flask.Response:
    """The JSON answer of a request refused before any run: its status, body and headers."""
    status, body, headers = to_response(exc)
    return flask.make_response(flask.jsonify(body), status, headers)


def http_trigger(request: flask.Request) -> flask.Response:
    """POST starts a run and answers its run record; GET /metrics, the metrics."""
    if found := scrape(request):
        return found
    try:
        s = _settings()
        trigger = endpoint.http_trigger(s, request.method, request.headers, request.get_data)
        record = endpoint.run(s, trigger, None, tracing.incoming(request.headers))
    except MilkPriceError as exc:
        return refused(exc)
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


def _answer(
    s: settings.Settings, found: triggers.Trigger, caller: tracing.TraceContext | None
) -> tuple[int, Any, dict[str, str]]:
    """Status, JSON body (None: empty) and headers for what an event asked for."""
    if isinstance(found, triggers.Validation):
        return 200, found.answer, found.headers or {}
    if isinstance(found, triggers.Ignored):
        return 200, {"ignored": found.reason}, {}
    trigger = "upload" if isinstance(found, triggers.Uploads) else "schedule"
    record = endpoint.run(s, trigger, found.event(), caller)
    status, headers = _status(record)
    return status, contract.to_builtins(record), headers


def events(request: flask.Request) -> flask.Response:
    """An event from any platform (see ``triggers``), on any path: new raw files or a schedule
    start a run, a handshake is answered, anything else is a 400. With a train token set,
    everything but a handshake must carry it. GET /metrics answers the metrics."""
    if scraped := scrape(request):
        return scraped
    found = None
    try:
        body = request.get_data(cache=False)
        s = _settings()
        found = endpoint.event(s, request.method, request.headers, body)
        status, answer, headers = _answer(s, found, tracing.incoming(request.headers))
    except MilkPriceError as exc:
        status, answer, headers = to_response(exc)
    _counted(found, status)
    return flask.make_response(flask.jsonify(answer) if answer is not None else "", status, headers)


def storage_event(event: CloudEvent) -> None:
    """A new object in the bucket; only new generations of the raw files train. The request
    is Flask's, as in any function of the Functions Framework: its token is checked too. A
    run that a redelivery may mend is answered with a 5xx and its run record (``_status``), so
    that the platform delivers the event again."""
    headers, attributes = flask.request.headers, event.get_attributes()
    try:
        s = _settings()
        found = endpoint.storage_event(s, headers, attributes, event.data)
    except MilkPriceError as exc:
        _counted(None, exc.status)
        flask.abort(refused(exc))
    if found is None:
        _counted(triggers.Ignored("not a raw file"), 200)
        return
    caller = tracing.incoming(headers) or tracing.incoming(attributes)
    record = endpoint.run(s, "upload", found.event(), caller)
    status, answer_headers = _status(record)
    _counted(found, status)
    if status != 200:
        # Answered, not raised: a redelivery asked for on purpose (the run has logged why)
        # is no crash, and a raise would log a stack trace at every retry of a busy bucket.
        answer = flask.jsonify(contract.to_builtins(record))
        flask.abort(flask.make_response(answer, status, answer_headers))


def _counted(found: triggers.Trigger | None, status: int) -> None:
    if metrics.on():
        train_metrics.event(found, status)


def unreadable(exc: Exception) -> flask.Response:
    """The Functions Framework decodes a CloudEvent before ``storage_event`` sees it: a body it
    cannot read (nested past the decoder's limit, say) is the sender's fault, a 400 that
    platforms do not redeliver, not an HTML 500 that they do."""
    return refused(BadRequest(endpoint.UNREADABLE, [{"problem": type(exc).__name__}]))


def health() -> flask.Response:
    """Cheap: the settings are read (a bad MILKPRICE_* variable fails the probe), nothing
    is trained and the bucket is not called."""
    try:
        s = _settings()
    except MilkPriceError as exc:
        return refused(exc)
    return flask.jsonify({"live": True, "function": "train", "cloud": s.cloud, "bucket": s.bucket})


def service(request: flask.Request) -> flask.Response:
    """The train image's one target. GET or HEAD on any path answers health and trains
    nothing; a request to ``/events`` (or below it) is an event (``events``); any other POST
    is the HTTP trigger (``http_trigger``). Both ask for the train token when one is set."""
    if request.method in ("GET", "HEAD"):
        return scrape(request) or health()
    path = request.path.rstrip("/")
    if path == EVENTS_PATH or path.startswith(EVENTS_PATH + "/"):
        return events(request)
    return http_trigger(request)
