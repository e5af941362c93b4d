"""One small HTTP client for the local tooling: the CLI, the stack, the event bridge, the
scheduler, the bench and the tests talk to the functions through it.

It never raises for an answer: a status of 0 means no answer came (refused, timed out, reset),
so callers decide in one place what "not there" means to them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer at all
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why there was no answer

    def json(self) -> Any:
        """The body as JSON; a body that is not JSON becomes ``{"error": <its start>}``."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return {"error": self.body.decode(errors="replace")[:300]}


def request(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    method: str | None = None,
) -> Answer:
    """GET, or POST when there is a body (or ``method``); the answer whatever its status."""
    call = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as r:
            return Answer(int(r.status), r.read(), dict(r.headers))
    except urllib.error.HTTPError as exc:
        return Answer(int(exc.code), exc.read(), dict(exc.headers or {}))
    except (urllib.error.URLError, OSError) as exc:
        return Answer(0, error=str(getattr(exc, "reason", exc)))


def post_json(url: str, doc: Any, token: str = "", timeout: float = 30.0) -> Answer:
    """POST ``doc`` as JSON, with a bearer token when one is given."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return request(url, json.dumps(doc).encode(), headers, timeout)
