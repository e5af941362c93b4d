"""What the train function's entry points share: who may start a run, and what a request asks.

Every target that can start a run (the HTTP trigger, the events endpoint, the storage
trigger and the image's one target) checks the train token here, when one is set; only Event
Grid's handshakes, which start nothing, are answered without it. An upload event that names
another bucket than ``MILKPRICE_BUCKET`` starts nothing either. Every body is decoded through
``triggers.decode``, so that no body, however nested, is more than a 400. No Flask here: the
entry points pass the method, the headers and the body.
"""

from __future__ import annotations

import hmac
import logging
import mmap
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from milkprice import contract, logs, tracing
from milkprice.errors import BadRequest, MethodNotAllowed, MilkPriceError, Unauthorized
from milkprice.settings import Settings
from milkprice.train import triggers

log = logging.getLogger("milkprice.train")


class Headers(Protocol):
    """A request's headers: a dict, or Flask's (which is no Mapping)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


HTTP_TRIGGERS = ("http", "schedule")
OPEN = (
    "the train function is open: MILKPRICE_TRAIN_TOKEN is not set, so whoever can reach it "
    "can start trainings. That is fine only where the platform itself authenticates every "
    "caller (Cloud Functions or Cloud Run without public access, where IAM checks the "
    "scheduler's and Eventarc's tokens); anywhere else set MILKPRICE_TRAIN_TOKEN and have "
    "every caller send 'Authorization: Bearer <token>'"
)
UNREADABLE = (
    "the body is not a CloudEvent this function can read: binary or structured mode, JSON "
    "data nested no deeper than the decoder takes"
)
# One byte of memory shared with every process forked after this import: gunicorn imports the
# function once and forks its workers from that process, and the warning is the deployment's,
# said by whichever worker answers first, not once by each worker.
_warned = mmap.mmap(-1, 1)


def start(component: str = "train") -> None:
    """Every request's first step; only the first does anything: JSON log lines for this
    process, and one warning if the function is open. Not at import: importing the function's
    module (a test, a bundle check) sets nothing up and says nothing.

    A bad setting is not reported here: the health probe and every request name it.
    """
    logs.setup(component)  # once per process: it returns at once when already set up
    if _warned[0]:
        return
    _warned[0] = 1
    try:
        token = Settings.from_env().train_token
    except MilkPriceError:
        return
    if not token:
        log.warning(OPEN)


def authorize(settings: Settings, headers: Headers) -> None:
    """Unauthorized unless the request carries the train token, when one is set."""
    if not settings.train_token:
        return
    sent = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    expected = f"Bearer {settings.train_token}"
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")


def http_trigger(
    settings: Settings, method: str, headers: Headers, read: Callable[[], bytes]
) -> str:
    """The HTTP trigger's trigger (``http`` or ``schedule``); the body is read only once the
    caller is allowed in."""
    if method != "POST":
        raise MethodNotAllowed("POST starts a training run")
    authorize(settings, headers)
    body = read()
    doc = triggers.decode(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise BadRequest('the body must be a JSON object such as {"trigger": "http"}')
    trigger = doc.get("trigger", "http")
    if trigger not in HTTP_TRIGGERS:
        raise BadRequest("trigger must be 'http' or 'schedule'", [{"field": "trigger"}])
    return str(trigger)


def event(settings: Settings, method: str, headers: Headers, body: bytes) -> triggers.Trigger:
    """What an event asks for (``triggers.parse``), once the caller may ask it."""
    try:
        found = triggers.parse(method, dict(headers.items()), body)
    except MilkPriceError:
        authorize(settings, headers)  # a caller without the token learns nothing more
        raise
    if not isinstance(found, triggers.Validation):  # a handshake starts nothing
        authorize(settings, headers)
        same_bucket(settings, found)
    return found


def storage_event(
    settings: Settings, headers: Headers, attributes: Mapping[str, Any], data: Any
) -> triggers.Uploads | None:
    """What the CloudEvent storage trigger trains on; None: nothing, acknowledged."""
    authorize(settings, headers)
    try:
        found = triggers.cloudevent(attributes, data)
    except BadRequest:
        return None  # not a use of this trigger: answered, so that it is not redelivered
    if not isinstance(found, triggers.Upload):
        return None
    uploads = triggers.Uploads((found,))
    same_bucket(settings, uploads)
    return uploads


def same_bucket(settings: Settings, found: triggers.Trigger) -> None:
    """BadRequest when new objects are in another bucket than this function's: training on
    its own bucket's files for someone else's upload would be a run nobody asked for."""
    if not isinstance(found, triggers.Uploads):
        return
    others = sorted({u.bucket for u in found.items if u.bucket and u.bucket != settings.bucket})
    if others:
        raise BadRequest(
            f"the event is about bucket {', '.join(map(repr, others))}; this function trains "
            f"on bucket {settings.bucket!r} (MILKPRICE_BUCKET) only",
            [{"field": "bucket", "expected": settings.bucket, "found": others}],
        )


SERVICE = "milkprice-train"  # the traces' service name (OTEL_SERVICE_NAME wins over it)


def run(
    settings: Settings,
    trigger: str,
    event: dict[str, Any] | None,
    caller: tracing.TraceContext | None,
) -> contract.RunRecord:
    """One run, in the trace of the request or event that asked for it (its id in the run
    record and every log line), its spans sent before the answer: the platform may freeze
    the instance as soon as it has answered."""
    from milkprice.train import runner  # heavy (pandas, scikit-learn): imported on first run

    start()
    kept = 1.0  # every run's trace: runs are few, and each is worth following
    name, attributes = f"train {trigger}", {"milkprice.trigger": trigger}
    with tracing.continued(SERVICE, name, caller, kept, **attributes):
        record = runner.run(settings, trigger, event)
    tracing.flush(SERVICE)
    return record
