"""Request bodies: the content type, the size limits, the read deadline, the JSON.

A body is read only if it is JSON and, whatever its Content-Length says, never beyond the
limit plus one byte; a body that has not all arrived ``body_timeout`` seconds after its
reading began gets 408.

A JSON parser that builds a Python object per value can turn a body into 20 times its size
(``[[],[],...]``: 3 bytes, a 64-byte list each), so only small bodies are parsed whole
(``parse_json``); of the others, ``members`` parses only the members asked for, each only up
to ``MEMBER_BYTES``, and leaves large ones as their JSON text for a check that knows their
shape.
"""

from __future__ import annotations

import functools
import re
from typing import IO, Any

import msgspec
import orjson

from milkprice import settings
from milkprice.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from milkprice.predict import deadlines, rows

CHUNK = 1 << 16


def is_json(content_type: str | None) -> bool:
    """True for application/json and application/*+json, with any parameters; absent is JSON."""
    if not content_type or content_type == "application/json":
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def is_octets(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/octet-stream"


def check_length(length: int | None) -> None:
    """413 for a declared body above the limit, before anything reads it."""
    limit = settings.cached().max_body_bytes
    if length is not None and length > limit:
        raise too_large(length, limit)


def too_large(length: int | None, limit: int) -> PayloadTooLarge:
    sent = f"{length} bytes" if length is not None else "more"
    return PayloadTooLarge(f"the body is {sent}; at most {limit} bytes are accepted")


def read_body(stream: IO[bytes], length: int | None, limit: int) -> bytes:
    """The body, reading no more than ``limit`` + 1 bytes whatever Content-Length said."""
    if length is not None and length > limit:
        raise too_large(length, limit)
    parts = []
    size = 0
    # Ask for what is declared, or 64 KiB at a time: a read(n) may allocate n bytes at once.
    while (want := min(CHUNK if length is None else length - size, limit + 1 - size)) > 0:
        try:
            chunk = stream.read(want)
        except TimeoutError:  # a timeout the server set on its socket: the client stopped sending
            raise late(length) from None
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    if size > limit:
        raise too_large(None, limit)
    if length is not None and size < length:
        raise BadRequest(
            f"the body ended after {size} of the {length} bytes its Content-Length declared"
        )
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_json(body: bytes | memoryview) -> Any:
    if not body:
        raise BadRequest("the request body is empty: send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def body_bytes(
    content_type: str | None,
    stream: IO[bytes],
    length: int | None,
    sock: Any = None,
    binary: bool = False,
) -> bytes:
    """A POST body's bytes: 415 unless JSON, 413 above the limit, 408 if it stalls.

    ``binary``: the body may be JSON followed by bytes (the V2 binary tensor data extension),
    so application/octet-stream is accepted too.

    ``sock`` is the connection's socket when the server gives it (gunicorn does): the whole
    body gets a deadline (``deadlines``), so a client that declares more than it sends, or
    sends it a byte at a time, holds a thread for ``body_timeout`` seconds, not for ever.
    After a late body the server gives the connection up.
    """
    if not is_json(content_type) and not (binary and is_octets(content_type)):
        also = " (or application/octet-stream with Inference-Header-Content-Length)" * binary
        raise UnsupportedMediaType(f"send application/json{also}, not {content_type}")
    limit = settings.cached().max_body_bytes
    if sock is None:
        return read_body(stream, length, limit)
    # The watch alone ends a stall or a trickle: shutting the reading side wakes a receive
    # blocked in the server. No socket timeout: setting one and clearing it again are
    # system calls, each a switch of threads, on every request (measured: 3% of 1-row
    # throughput), for a body that has most often arrived with its headers.
    entry = deadlines.watch(sock, settings.cached().body_timeout)
    try:
        body = read_body(stream, length, limit)
    except Exception:
        if deadlines.finish(entry):  # the connection was shut under the read: that is why
            raise late(length) from None
        raise
    if deadlines.finish(entry):
        raise late(length)
    return body


def late(length: int | None) -> RequestTimeout:
    declared = f": the {length} bytes its Content-Length declared" if length is not None else ""
    seconds = settings.cached().body_timeout
    return RequestTimeout(f"the body did not all arrive within {seconds:g} s{declared}")


MEMBER_BYTES = 65_536  # the largest member ``members`` parses
_ABSENT = msgspec.Raw()
_STAND_IN = {b"[": [], b"{": {}, b'"': "", b"t": True, b"f": False, b"n": None}
_FIRST = re.compile(rb"\s*(.)", re.DOTALL)  # a JSON text's first byte, copying nothing


@functools.cache
def _outline(names: tuple[str, ...]) -> msgspec.json.Decoder:
    """A decoder of a JSON object that keeps only ``names``, each as its JSON text."""
    fields = [(f"m{i}", msgspec.Raw, _ABSENT) for i in range(len(names))]
    rename = {f"m{i}": name for i, name in enumerate(names)}
    return msgspec.json.Decoder(msgspec.defstruct("Outline", fields, rename=rename))


def members(
    body: bytes | memoryview, names: tuple[str, ...], where: str = "", text: tuple[str, ...] = ()
) -> Any:
    """The JSON object ``body`` with only its members ``names``, as ``parse_json`` gives them;
    those in ``text`` as their JSON text (bytes), to be read by a check that knows their shape.

    The body's syntax is checked whole, but no member larger than ``MEMBER_BYTES`` is parsed
    (a 400 names it, after ``where``), and nothing is built for the others. A body that is
    not an object gives an empty value of its JSON type, for the caller's checks to name.
    """
    if not len(body):
        parse_json(b"")  # the error for an empty body
    try:
        outline = rows.decode_json(_outline(names), body)
    except msgspec.ValidationError:  # no object; and maybe no JSON either, past that point
        rows.decode_json(rows.SYNTAX, body)
        return stand_in(body)
    found: dict[str, Any] = {}
    for i, name in enumerate(names):
        raw = getattr(outline, f"m{i}")
        if not len(raw):
            continue
        if name in text:
            found[name] = bytes(raw)
        elif len(raw) > MEMBER_BYTES:
            field = f"{where}{name}"
            problem = f"{len(raw)} bytes of JSON; at most {MEMBER_BYTES} are accepted"
            raise BadRequest(f"{field}: {problem}", [{"field": field, "problem": problem}])
        else:
            found[name] = parse_json(memoryview(raw))
    return found


def stand_in(text: bytes | memoryview) -> Any:
    """An empty value of the JSON type of the JSON text ``text``, for a check to name its type."""
    first = _FIRST.match(text)
    return _STAND_IN.get(first[1] if first else b"", 0)
