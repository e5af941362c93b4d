"""Request bodies: the content type, the size limits, the read deadline, the JSON.

A body is read only if it is JSON and, whatever its Content-Length says, never beyond the
limit plus one byte; a client that stops sending gets 408 after ``body_timeout`` seconds.
"""

from __future__ import annotations

from typing import IO, Any

import orjson

from milkprice.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from milkprice.predict import cache

CHUNK = 1 << 16


def is_json(content_type: str | None) -> bool:
    """True for application/json and application/*+json, with any parameters; absent is JSON."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def is_octets(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/octet-stream"


def check_length(length: int | None) -> None:
    """413 for a declared body above the limit, before anything reads it."""
    limit = cache.settings().max_body_bytes
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
        except TimeoutError:  # the socket's deadline (body_bytes): the client stopped sending
            declared = "" if length is None else f" {length} bytes its Content-Length declared"
            raise RequestTimeout(
                f"the body stopped arriving before the{declared or ' end'}: nothing came "
                f"for {cache.settings().body_timeout:g} s"
            ) from None
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


def parse_json(body: bytes) -> Any:
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

    ``sock`` is the connection's socket when the server gives it (gunicorn does): reading
    gets a deadline, so a client that declares more than it sends holds a thread for
    ``body_timeout`` seconds, not for ever. After a stalled body the deadline stays, and the
    server gives the connection up when it tries to read the rest.
    """
    if not is_json(content_type) and not (binary and is_octets(content_type)):
        also = " (or application/octet-stream with Inference-Header-Content-Length)" * binary
        raise UnsupportedMediaType(f"send application/json{also}, not {content_type}")
    if sock is not None:
        sock.settimeout(cache.settings().body_timeout)
    body = read_body(stream, length, cache.settings().max_body_bytes)
    if sock is not None:
        sock.settimeout(None)  # the answer is written without one
    return body
