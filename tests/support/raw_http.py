"""A client for a server over a socket: requests as sent, bytes as they are, answers as parsed.

``request`` goes through http.client; ``raw_exchange`` and ``read_answer`` send and read bytes
that no well-behaved client would, and ``parse`` reads the answer they get back.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"
QUICK_SECONDS = 5.0  # what "answers quickly" means here, on a 2-core machine


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    seconds: float = 0.0
    doc: Any = field(default=None)

    def __post_init__(self) -> None:
        if self.headers.get("content-type", "").startswith(JSON):
            self.doc = json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = JSON,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Answer:
    """One request over HTTP/1.1 with http.client (which adds Content-Length for a body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    start = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        seconds = time.monotonic() - start
        found = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, found, data, seconds)
    finally:
        conn.close()


def raw_exchange(
    port: int, data: bytes, *, shut: bool = False, timeout: float = QUICK_SECONDS
) -> bytes:
    """Send bytes as they are; what the server sends back until it closes or ``timeout`` passes.

    With ``shut``, the sending side is closed after the bytes (the client has nothing more).
    Raises TimeoutError if the server neither answers nor closes within ``timeout``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, timeout)


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Bytes until one complete answer (by its Content-Length) or the connection closes."""
    deadline = time.monotonic() + timeout
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within {timeout} s; got {received[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no answer within {timeout} s; got {received[:200]!r}") from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
        head, sep, rest = received.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(rest) >= int(value):
                    return received


def parse(raw: bytes) -> Answer:
    """The first answer in raw bytes."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", len(rest)))
    return Answer(status, headers, rest[:length])


def chunked(data: bytes) -> bytes:
    """One chunk of a body sent with Transfer-Encoding: chunked."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
