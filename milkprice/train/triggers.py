"""What an event sent to the train function asks for, whichever platform sent it.

One pure function, :func:`parse`, reads a request (method, headers, body) and says what it
is: new raw objects to train on (:class:`Uploads`), a scheduled training (:class:`Schedule`),
a webhook handshake to answer (:class:`Validation`) or something to acknowledge and leave
(:class:`Ignored`). A body of no known shape is :class:`~milkprice.errors.BadRequest`, whose
message lists the shapes taken. Light on purpose: the standard library, the store's names
and the errors; no pandas, no cloud SDK.

The shapes, as each platform documents them:

- a CloudEvent, binary mode (``ce-*`` headers) or structured (``application/cloudevents+json``,
  a batch as a JSON array): Eventarc's ``google.cloud.storage.object.v1.finalized``, Event
  Grid's ``Microsoft.Storage.BlobCreated``, a Knative PingSource's
  ``dev.knative.sources.ping.v1.event``;
- an S3 event notification (``{"Records": [...]}``, keys URL-encoded), also as the body of
  SQS messages, and S3's ``s3:TestEvent``;
- an EventBridge ``Object Created`` event from ``aws.s3``;
- Event Grid's own schema (an array of events with ``eventType``), its subscription
  validation event included, and the CloudEvents webhook handshake (``OPTIONS`` with
  ``WebHook-Request-Origin``);
- a fixed scheduler payload, ``{"trigger": "schedule"}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus

from milkprice.contract import raw_path
from milkprice.errors import BadRequest, MethodNotAllowed
from milkprice.schema import RAW_FILES

FINALIZED = "google.cloud.storage.object.v1.finalized"
GCS_EVENT = "google.cloud.storage.object.v1."
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
STORAGE_EVENT = "Microsoft.Storage."
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
EVENT_GRID = "Microsoft.EventGrid."
PING = "dev.knative.sources.ping.v1.event"
S3_TEST = "s3:TestEvent"
BLOB_SUBJECT = "/blobServices/default/containers/"
RAW_NAMES = tuple(raw_path(name) for name in RAW_FILES)

ACCEPTED = (
    "expected one of: a CloudEvent (binary or structured mode) of type "
    f"{FINALIZED} (Eventarc), {BLOB_CREATED} (Event Grid) or {PING} (Knative PingSource); "
    'an S3 event notification {"Records": [...]} (also inside SQS messages); an EventBridge '
    '"Object Created" event from aws.s3; an Event Grid schema array of '
    f"{BLOB_CREATED} or {VALIDATION} events; or the scheduler payload "
    '{"trigger": "schedule"}'
)


@dataclass(frozen=True)
class Upload:
    """One new object under ``raw/`` with one of the raw files' names."""

    name: str  # the object's path in the bucket, e.g. raw/precio_leche.csv
    token: str  # the version the event names (a generation, an ETag without quotes)
    event_id: str
    source: str  # eventarc, s3, eventbridge, eventgrid
    bucket: str = ""  # the bucket or container the event names, where it names one

    def event(self) -> dict[str, Any]:
        """As the run record keeps it."""
        found: dict[str, Any] = {
            "id": self.event_id,
            "source": self.source,
            "name": self.name,
            "token": self.token,
        }
        if self.source == "eventarc":  # the storage trigger's records always had it
            found["generation"] = self.token
        return found


@dataclass(frozen=True)
class Uploads:
    """New raw objects; however many, one run covers the raw files as they are now."""

    items: tuple[Upload, ...]

    def event(self) -> dict[str, Any]:
        found = self.items[0].event()
        if len(self.items) > 1:
            found["names"] = [u.name for u in self.items]
        return found


@dataclass(frozen=True)
class Schedule:
    """A scheduled training (not claimed: every one runs, like the HTTP trigger's)."""

    source: str  # scheduler, knative-ping
    event_id: str = ""

    def event(self) -> dict[str, Any]:
        return {"source": self.source, **({"id": self.event_id} if self.event_id else {})}


@dataclass(frozen=True)
class Validation:
    """A webhook handshake: answer 200 with this body (None: empty) and these headers."""

    answer: dict[str, str] | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Ignored:
    """Nothing to do (another object, a test event): acknowledge it, so it is not resent."""

    reason: str


Trigger = Uploads | Schedule | Validation | Ignored
Part = Upload | Schedule | Validation | Ignored


def parse(method: str, headers: Mapping[str, str], body: bytes) -> Trigger:
    """What a request to the event endpoint asks for; BadRequest when it is no known shape."""
    h = {k.lower(): v for k, v in headers.items()}
    if method == "OPTIONS":
        origin = h.get("webhook-request-origin")
        if origin is None:
            raise MethodNotAllowed(
                "OPTIONS answers only Event Grid's handshake (a WebHook-Request-Origin header)"
            )
        return Validation(
            headers={"WebHook-Allowed-Origin": origin or "*", "WebHook-Allowed-Rate": "*"}
        )
    if method != "POST":
        raise MethodNotAllowed("POST delivers an event; " + ACCEPTED)
    if "ce-specversion" in h:  # a CloudEvent in binary mode: attributes in ce-* headers
        attributes = {k[3:]: _header(v) for k, v in h.items() if k.startswith("ce-")}
        return _combine([cloudevent(attributes, _binary_data(h, body))])
    return _combine(_document(_json(body)))


def cloudevent(attributes: Mapping[str, Any], data: Any) -> Part:
    """One CloudEvent, from its attributes and its data (decoded JSON, or None)."""
    kind = str(attributes.get("type", ""))
    event_id = str(attributes.get("id", ""))
    if kind == FINALIZED:
        if not isinstance(data, dict) or not data.get("name"):
            raise BadRequest(f"a {FINALIZED} event must carry the object's name in data.name")
        name, token = str(data["name"]), str(data.get("generation", ""))
        return _upload(name, token, event_id, "eventarc", str(data.get("bucket", "")))
    if kind == BLOB_CREATED:
        return _blob_created(attributes.get("subject"), data, event_id)
    if kind == PING:
        return _schedule(data, "knative-ping", event_id)
    if kind.startswith((GCS_EVENT, STORAGE_EVENT)):
        return Ignored(f"{kind}: only new objects train")
    raise BadRequest(f"CloudEvent type {kind or '(none)'!r} is not taken; {ACCEPTED}")


# ---------------------------------------------------------------- the shapes


def _document(doc: Any, depth: int = 0) -> list[Part]:
    """The parts of one decoded JSON body, by its shape: one event, or a flat batch of them
    (a batch of batches is no platform's, and nesting it would only cost recursion)."""
    if isinstance(doc, list) and doc:
        return [part for item in doc for part in _event(item, depth)]
    return _event(doc, depth)


def _event(doc: Any, depth: int) -> list[Part]:
    """The parts of one event object."""
    if not isinstance(doc, dict):
        raise BadRequest(f"the body is not an event; {ACCEPTED}")
    if "specversion" in doc:  # a structured CloudEvent
        return [cloudevent(doc, _structured_data(doc))]
    if isinstance(doc.get("Records"), list) and doc["Records"]:
        return [part for record in doc["Records"] for part in _record(record, depth)]
    if doc.get("Event") == S3_TEST:
        return [Ignored("S3 test event")]
    if "detail-type" in doc:
        return [_eventbridge(doc)]
    if "eventType" in doc:
        return [_event_grid(doc)]
    if "trigger" in doc:
        return [_schedule(doc, "scheduler", "")]
    raise BadRequest(f"the body is no known event; {ACCEPTED}")


def _record(record: Any, depth: int) -> list[Part]:
    """One of the Records: an S3 notification record, or an SQS message carrying a body."""
    if not isinstance(record, dict):
        raise BadRequest(f"Records must hold objects; {ACCEPTED}")
    source = record.get("eventSource")
    if source == "aws:s3":
        return [_s3_record(record)]
    if source == "aws:sqs" and depth == 0 and isinstance(record.get("body"), str):
        return _document(_json(record["body"].encode(), "an SQS message body"), depth + 1)
    raise BadRequest(f"a record from {source!r} is not taken; {ACCEPTED}")


def _s3_record(record: dict[str, Any]) -> Part:
    name = str(record.get("eventName", ""))
    s3 = record.get("s3")
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(obj, dict) or not obj.get("key"):
        raise BadRequest("an S3 event record must carry s3.object.key")
    key = unquote_plus(str(obj["key"]))  # S3 sends keys URL-encoded, a space as '+'
    if not name.startswith("ObjectCreated:"):
        return Ignored(f"{name or 'an S3 event'} on {key}: only new objects train")
    event_id = str(obj.get("sequencer") or _dig(record, "responseElements", "x-amz-request-id"))
    bucket = str(_dig(s3, "bucket", "name"))
    return _upload(key, _etag(obj.get("eTag")), event_id, "s3", bucket)


def _eventbridge(doc: dict[str, Any]) -> Part:
    kind, source = doc.get("detail-type"), doc.get("source")
    if source != "aws.s3":
        raise BadRequest(f"EventBridge events from {source!r} are not taken; {ACCEPTED}")
    detail = doc.get("detail")
    obj = detail.get("object") if isinstance(detail, dict) else None
    if not isinstance(obj, dict) or not obj.get("key"):
        raise BadRequest("an EventBridge S3 event must carry detail.object.key")
    key = str(obj["key"])
    if kind != "Object Created":
        return Ignored(f"{kind} on {key}: only new objects train")
    bucket = str(_dig(detail, "bucket", "name"))
    return _upload(key, _etag(obj.get("etag")), str(doc.get("id", "")), "eventbridge", bucket)


def _event_grid(doc: dict[str, Any]) -> Part:
    kind, data = str(doc.get("eventType", "")), doc.get("data")
    if kind == VALIDATION:
        code = data.get("validationCode") if isinstance(data, dict) else None
        if not code:
            raise BadRequest(f"a {VALIDATION} must carry data.validationCode")
        return Validation(answer={"validationResponse": str(code)})
    if kind == BLOB_CREATED:
        return _blob_created(doc.get("subject"), data, str(doc.get("id", "")))
    if kind.startswith((STORAGE_EVENT, EVENT_GRID)):
        return Ignored(f"{kind}: only new objects train")
    raise BadRequest(f"Event Grid event type {kind or '(none)'!r} is not taken; {ACCEPTED}")


def _blob_created(subject: Any, data: Any, event_id: str) -> Part:
    """Container and blob from ``/blobServices/default/containers/<c>/blobs/<path>``."""
    container, marker, blob = str(subject or "").removeprefix(BLOB_SUBJECT).partition("/blobs/")
    if not str(subject or "").startswith(BLOB_SUBJECT) or not marker or not blob:
        raise BadRequest(
            f"a {BLOB_CREATED} event's subject must be "
            f"{BLOB_SUBJECT}<container>/blobs/<path>, not {subject!r}"
        )
    data = data if isinstance(data, dict) else {}
    if data.get("api") == "CreateFile":  # Data Lake: the content comes with FlushWithClose
        return Ignored(f"{blob} created empty (CreateFile): its FlushWithClose event trains")
    return _upload(blob, _etag(data.get("eTag")), event_id, "eventgrid", container)


def _schedule(data: Any, source: str, event_id: str) -> Part:
    if data is not None and not isinstance(data, dict):
        raise BadRequest('a scheduled event\'s data must be {"trigger": "schedule"}')
    trigger = (data or {}).get("trigger", "schedule")
    if trigger != "schedule":
        raise BadRequest(
            f"trigger {trigger!r} is not taken here (manual runs go to the HTTP trigger); "
            + ACCEPTED
        )
    return Schedule(source, event_id)


def _upload(name: str, token: str, event_id: str, source: str, bucket: str) -> Part:
    if name not in RAW_NAMES:
        return Ignored(f"{name} is not one of the raw files: {', '.join(RAW_NAMES)}")
    return Upload(name, token, event_id, source, bucket)


def _combine(parts: Iterable[Part]) -> Trigger:
    """One answer for a batch: a handshake first, then uploads (one run), then a schedule."""
    parts = list(parts)
    for part in parts:
        if isinstance(part, Validation):
            return part
    uploads = tuple(p for p in parts if isinstance(p, Upload))
    if uploads:
        return Uploads(uploads)
    for part in parts:
        if isinstance(part, Schedule):
            return part
    return Ignored("; ".join(p.reason for p in parts if isinstance(p, Ignored)) or "no events")


# ---------------------------------------------------------------- bytes to JSON


def decode(body: bytes, what: str = "the body", taken: str = "") -> Any:
    """JSON from bytes; a body that is not JSON, or nests too deeply to decode, is a 400."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(f"{what} is not JSON{taken}") from None
    except RecursionError:  # e.g. "[" * 100000: the decoder's own limit, not a server fault
        raise BadRequest(f"{what} nests deeper than the JSON decoder goes{taken}") from None


def _json(body: bytes, what: str = "the body") -> Any:
    if not body.strip():
        raise BadRequest(f"{what} is empty; {ACCEPTED}")
    return decode(body, what, f"; {ACCEPTED}")


def _binary_data(headers: Mapping[str, str], body: bytes) -> Any:
    """A binary-mode CloudEvent's data: its body, as JSON when it is (None when empty)."""
    if not body.strip():
        return None
    kind = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return _json(body, "the CloudEvent's data")
    return body


def _structured_data(doc: dict[str, Any]) -> Any:
    """A structured CloudEvent's data: ``data``, or ``data_base64`` decoded (JSON if it is)."""
    if "data_base64" not in doc:
        return doc.get("data")
    try:
        raw = base64.b64decode(str(doc["data_base64"]), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the CloudEvent's data_base64 is not base64") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return raw
    except RecursionError:
        raise BadRequest(
            "the CloudEvent's data_base64 nests deeper than the JSON decoder goes"
        ) from None


def _header(value: str) -> str:
    """A ce-* header's value: the HTTP binding percent-encodes what is not printable ASCII."""
    return unquote(value) if "%" in value else value


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc if doc is not None else ""
