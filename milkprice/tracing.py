"""Traces: a request's trace continued, never restarted, and spans exported only when asked.

Every request and event may carry its caller's trace: W3C ``traceparent``, or the header a
cloud sends instead (Google's ``X-Cloud-Trace-Context``, AWS's ``X-Amzn-Trace-Id``, which is
also an SQS message's ``AWSTraceHeader``). :func:`incoming` reads whichever is there (in that
order), and :func:`continued` makes it the current trace of what the function does next: the
log lines and a run record carry its id (:func:`trace_id`) whether or not spans are exported.

Spans are exported over OTLP/HTTP only when the standard variables name where
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the SDK reads the
rest of its ``OTEL_*`` settings itself). With neither set, no OpenTelemetry module is even
imported: :func:`span` is then a context manager that does nothing.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, cast

import werkzeug.datastructures

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

W3C = re.compile(r"(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
GOOGLE = re.compile(r"([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?")
AWS_ROOT = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
AWS_PARENT = re.compile(r"[0-9a-fA-F]{16}")


class Headers(Protocol):
    """A request's headers (a mapping, or a server's multi-valued headers) or an event's."""

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True)
class TraceContext:
    """A trace as the caller sent it: its id, the caller's span (``""``: none), sampled."""

    trace_id: str  # 32 lower-case hex digits, never all zeros
    span_id: str  # 16 lower-case hex digits, or ""
    sampled: bool


_current: ContextVar[TraceContext | None] = ContextVar("milkprice_trace", default=None)
# the tracer of the current trace when spans are exported (None: no span is made)
_tracer: ContextVar[Any] = ContextVar("milkprice_tracer", default=None)


def _valid(trace: str, span: str) -> bool:
    return int(trace, 16) != 0 and (span == "" or int(span, 16) != 0)


def _w3c(value: str) -> TraceContext | None:
    found = W3C.fullmatch(value.strip().lower())
    if not found or not _valid(found[1], found[2]):
        return None
    return TraceContext(found[1], found[2], bool(int(found[3], 16) & 1))


def _google(value: str) -> TraceContext | None:
    found = GOOGLE.fullmatch(value.strip())
    if not found:
        return None
    span = int(found[2] or 0)
    trace, span_hex = found[1].lower(), f"{span:016x}" if 0 < span < 2**64 else ""
    return TraceContext(trace, span_hex, found[3] == "1") if _valid(trace, span_hex) else None


def _aws(value: str) -> TraceContext | None:
    fields = dict(p.strip().partition("=")[::2] for p in value.split(";") if "=" in p)
    root = AWS_ROOT.fullmatch(fields.get("Root", ""))
    if not root:
        return None
    trace = (root[1] + root[2]).lower()
    parent = fields.get("Parent", "")
    span = parent.lower() if AWS_PARENT.fullmatch(parent) else ""
    return TraceContext(trace, span, fields.get("Sampled") == "1") if _valid(trace, span) else None


# ce-traceparent: a CloudEvent's distributed-tracing extension, in binary mode
READERS = (
    ("traceparent", _w3c),
    ("ce-traceparent", _w3c),
    ("X-Cloud-Trace-Context", _google),
    ("X-Amzn-Trace-Id", _aws),
)
ENVIRON_KEYS = tuple("HTTP_" + name.upper().replace("-", "_") for name, _ in READERS)


def incoming(headers: Headers) -> TraceContext | None:
    """The caller's trace from the first of the known headers that holds a valid one (names
    in any case: a request's headers or an event's)."""
    if isinstance(headers, werkzeug.datastructures.EnvironHeaders):
        # a request's: straight from its WSGI environ, four lookups instead of a copy of
        # every header on every request
        values: Iterable[str | None] = map(headers.environ.get, ENVIRON_KEYS)
    else:
        folded = {name.lower(): value for name, value in headers.items()}
        values = [folded.get(name.lower()) for name, _ in READERS]
    for value, (_, read) in zip(values, READERS, strict=True):
        if value and (found := read(value)):
            return found
    return None


_decided: tuple[bool, bool] | None = None  # (exporting, a sampler named): see _mode


def _mode() -> tuple[bool, bool]:
    """Whether spans are exported (:func:`enabled`) and whether ``OTEL_TRACES_SAMPLER`` names
    a sampler, read once per process like its settings (every request asks), read again
    after :func:`reset`."""
    global _decided
    found = _decided
    if found is None:  # two first requests at once read the same environment: no lock
        sampler = bool(os.environ.get("OTEL_TRACES_SAMPLER", "").strip())
        found = _decided = (enabled(), sampler)
    return found


def enabled() -> bool:
    """Whether spans are exported: an OTLP endpoint is set and the SDK is not disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINTS)


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), or None outside any trace."""
    found = _current.get()
    return found.trace_id if found else None


# the caller's trace id for the next root span when the caller named no span of its own
_trace_ahead: ContextVar[int | None] = ContextVar("milkprice_trace_ahead", default=None)


_providers: dict[str, Any] = {}  # by service: one per process, built on its first trace
_tracers: dict[str, Any] = {}  # each provider's tracer: read on every request, without a lock
_providers_lock = threading.Lock()


def _tracer_of(service: str) -> Any:
    """The tracer of the process's provider, built once, on the first trace."""
    found = _tracers.get(service)
    if found is not None:
        return found
    with _providers_lock:
        if service not in _providers:
            _providers[service] = _new_provider(service)
            _tracers[service] = _providers[service].get_tracer("milkprice")
        return _tracers[service]


def _new_provider(service: str) -> Any:
    """A provider exporting in batches. Which traces reach it was decided already
    (:func:`_kept`), so its sampler is the SDK's default (a parent's decision, else every
    trace), or the one ``OTEL_TRACES_SAMPLER`` names, which the SDK reads itself."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class CallersTrace(RandomIdGenerator):
        """A root span keeps the trace id its caller sent without a span (Google's header
        with no span, AWS's with no Parent): the trace goes on instead of starting anew."""

        def generate_trace_id(self) -> int:
            return _trace_ahead.get() or super().generate_trace_id()

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over this name
    resource = Resource.create({"service.name": service})
    provider = TracerProvider(resource=resource, id_generator=CallersTrace())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def flush(service: str, timeout_seconds: float = 5.0) -> None:
    """Send the spans not yet sent: before a function's instance may be frozen (a run's end).
    Nothing to send, and nothing imported, when no trace was exported by this process."""
    found = _providers.get(service)
    if found is not None:
        found.force_flush(int(timeout_seconds * 1000))


def reset() -> None:
    """Send what is left and forget the providers: the next trace builds one anew, reading
    the ``OTEL_*`` variables again (a test's receiver, say)."""
    global _decided
    _decided = None
    with _providers_lock:
        for found in _providers.values():
            found.shutdown()
        _providers.clear()
        _tracers.clear()


def _parent(caller: TraceContext | None) -> Any:
    """The OpenTelemetry context whose span is the caller's (remote), or None: a root span
    (in the caller's trace, when it sent one without a span: see ``CallersTrace``)."""
    if caller is None or not caller.span_id:
        return None
    from opentelemetry import trace

    remote = trace.SpanContext(
        int(caller.trace_id, 16),
        int(caller.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if caller.sampled else 0),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote))


def _of(span: Any) -> TraceContext:
    ctx = span.get_span_context()
    return TraceContext(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", ctx.trace_flags.sampled)


def continued(
    service: str, name: str, caller: TraceContext | None, ratio: float = 1.0, **attributes: Any
) -> AbstractContextManager[TraceContext | None]:
    """Run the body in the caller's trace: the current trace for the log lines and the run
    record; with export on, under a server span ``name`` whose parent is the caller's span
    (a trace of its own when the caller sent none). ``ratio``: the share of the traces
    starting here that are kept, unless ``OTEL_TRACES_SAMPLER`` says otherwise. A trace not
    kept makes no child span at all: :func:`span` costs nothing in it."""
    if _mode()[0] and _kept(caller, ratio):
        return _exported(service, name, caller, attributes)
    if caller is None and _current.get() is None and _tracer.get() is None:
        return NOTHING  # nothing to set: the untraced request's usual case, kept cheap
    return _set(caller)


@contextmanager
def _set(trace: TraceContext | None, tracer: Any = None) -> Iterator[TraceContext | None]:
    tokens = _current.set(trace), _tracer.set(tracer)
    try:
        yield trace
    finally:
        _current.reset(tokens[0])
        _tracer.reset(tokens[1])


@contextmanager
def _exported(
    service: str, name: str, caller: TraceContext | None, attributes: dict[str, Any]
) -> Iterator[TraceContext | None]:
    """:func:`continued` under a server span, exported."""
    from opentelemetry import trace

    tracer = _tracer_of(service)
    kind = trace.SpanKind.SERVER
    ahead = _trace_ahead.set(int(caller.trace_id, 16) if caller else None)
    try:  # the span's ids are drawn here, while the caller's trace id is ahead
        root = tracer.start_span(name, _parent(caller), kind, attributes=attributes)
    finally:
        _trace_ahead.reset(ahead)
    recorded = tracer if root.is_recording() else None
    with trace.use_span(root, end_on_exit=True), _set(_of(root), recorded) as here:
        yield here


def _kept(caller: TraceContext | None, ratio: float) -> bool:
    """Whether a trace is kept, decided here, before anything of OpenTelemetry is loaded, by
    the rule of the SDK's ``ParentBased(TraceIdRatioBased(ratio))``: a caller's span's
    decision; else ``ratio`` of trace ids (by their last 16 hex digits, as that sampler
    reads them), or of new traces. The SDK then keeps what it is given. A trace not kept
    costs a request nothing more, and the SDK is not imported until one is: not on a cold
    start's first request, as a rule.
    With ``OTEL_TRACES_SAMPLER`` set, its sampler decides, in the SDK."""
    if _mode()[1]:
        return True
    if caller is not None and caller.span_id:
        return caller.sampled
    if caller is not None:
        return int(caller.trace_id[16:], 16) < ratio * 2**64
    return random.random() < ratio


NOTHING = nullcontext()  # reusable: entering it does nothing


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A child span of the current one, when the current trace exports; else nothing (one
    shared context that does nothing: an untraced request builds no object per span)."""
    tracer = _tracer.get()
    if tracer is None:
        return NOTHING
    return cast(
        AbstractContextManager[Any], tracer.start_as_current_span(name, attributes=attributes)
    )


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (the request's status, say); nothing when not exporting."""
    if _tracer.get() is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes)
