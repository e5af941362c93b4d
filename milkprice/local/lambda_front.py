"""A Function URL, locally: each HTTP request becomes the event a Function URL hands Lambda
(payload format 2.0), is invoked on a function under the Lambda Runtime Interface Emulator,
and the function's answer becomes the HTTP response, as a Function URL makes it.

As a Function URL does: header names in lower case, repeated headers joined with commas, the
``Cookie`` header as ``cookies``, the query string raw and parsed, a body of a text type (text,
JSON, XML, JavaScript) as it is and any other base64-encoded with ``isBase64Encoded``; the
``X-Forwarded-Proto``, ``-Port`` and ``-For`` of the connection. An invocation's request and
answer may each be 6 MB (6,291,456 bytes) at most: a larger request is refused with 413, a
larger answer is a 502. The answer ``{"statusCode", "headers", "cookies", "body",
"isBase64Encoded"}`` is taken as it is, any other JSON answered as a 200 of
``application/json``, a failed invocation (the runtime's error report, a time-out, no answer)
as a 502.

Each emulator serves one invocation at a time (a second one makes it crash), so the front
lends its emulators out one request each (``lambda_rie.Pool``): with N emulators, N requests
run at once and the rest wait in the front's threads for a free one, a 429 after
``--wait`` seconds, where Lambda would have started another instance or throttled.
The server is gunicorn, as under the Functions Framework.
"""

from __future__ import annotations

import argparse
import base64
import http
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from milkprice import http_client as client
from milkprice.local import lambda_rie, processes

log = logging.getLogger("milkprice.local.lambda_front")

MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's limit on a synchronous invocation's request and answer
TEXT = ("text/", "application/json", "application/xml", "application/javascript")
TEXT_SUFFIXES = ("+json", "+xml")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
StartResponse = Callable[..., Any]


def is_text(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind.startswith(TEXT) or kind.endswith(TEXT_SUFFIXES)


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers as a Function URL passes them: names in lower case, repeated
    ones already joined with commas by the server."""
    found = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            found[key[5:].lower().replace("_", "-")] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            found[key.lower().replace("_", "-")] = value
    client_ip = environ.get("REMOTE_ADDR", "")
    forwarded = found.get("x-forwarded-for")
    found["x-forwarded-for"] = f"{forwarded}, {client_ip}" if forwarded else client_ip
    found["x-forwarded-proto"] = environ.get("wsgi.url_scheme", "http")
    found["x-forwarded-port"] = str(environ.get("SERVER_PORT", ""))
    return found


def _body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {"isBase64Encoded": False}
    if is_text(content_type):
        try:
            return {"body": body.decode(), "isBase64Encoded": False}
        except UnicodeDecodeError:
            pass  # not the text it says it is: sent as it came, in base64
    return {"body": base64.b64encode(body).decode(), "isBase64Encoded": True}


def function_url_event(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The event a Function URL makes of one request."""
    headers = _headers(environ)
    cookie = headers.pop("cookie", "")
    raw = urlsplit(environ.get("RAW_URI") or environ.get("PATH_INFO") or "/")
    query = environ.get("QUERY_STRING", "")
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params[name] = f"{params[name]},{value}" if name in params else value
    host = headers.get("host", "localhost")
    now = time.time()
    method = environ["REQUEST_METHOD"]
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw.path or "/",
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": host.split(".")[0],
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": raw.path or "/",
                "protocol": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "sourceIp": environ.get("REMOTE_ADDR", ""),
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        **_body(body, headers.get("content-type", "")),
    }
    if cookie:
        event["cookies"] = [c.strip() for c in cookie.split(";") if c.strip()]
    if params:
        event["queryStringParameters"] = params
    return event


# ---------------------------------------------------------------- the answer


Response = tuple[int, list[tuple[str, str]], bytes]


def _message(status: int, message: str) -> Response:
    body = json.dumps({"Message": message}).encode()
    return status, [("Content-Type", "application/json")], body


def response_of(answer: client.Answer) -> Response:
    """The HTTP response a Function URL makes of an invocation's answer."""
    if answer.status != 200 or len(answer.body) > MAX_PAYLOAD:
        why = answer.error or f"{answer.status}, {len(answer.body)} bytes"
        log.error("the invocation failed (%s)", why)
        return _message(502, "Internal Server Error")
    try:
        doc = json.loads(answer.body)
    except ValueError:  # the emulator's "Task timed out after ..."
        log.error("the invocation failed: %s", answer.body[:200].decode(errors="replace"))
        return _message(502, "Internal Server Error")
    if failed := lambda_rie.function_error(doc):
        log.error("the function failed: %s", failed)
        return _message(502, "Internal Server Error")
    if not (isinstance(doc, dict) and "statusCode" in doc):
        return 200, [("Content-Type", "application/json")], answer.body
    headers = [(str(k), str(v)) for k, v in (doc.get("headers") or {}).items()]
    headers += [("Set-Cookie", str(c)) for c in doc.get("cookies") or ()]
    text = str(doc.get("body") or "")
    body = base64.b64decode(text) if doc.get("isBase64Encoded") else text.encode()
    return int(doc["statusCode"]), headers, body


def _reason(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


class Front:
    """The WSGI app: a request in, an invocation on a free emulator, the response out."""

    def __init__(self, urls: list[str], timeout: float, wait: float) -> None:
        self.pool = lambda_rie.Pool(urls)
        self.timeout = timeout
        self.wait = wait

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = self.respond(environ)
        # a HEAD's answer, a 204's and a 304's keep the length the function gave them, if any;
        # any other's is its body's
        kept = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        length = [("Content-Length", str(len(body)))]
        if environ["REQUEST_METHOD"] == "HEAD" or status in (204, 304):
            length = [(k, v) for k, v in headers if k.lower() == "content-length"][:1]
        start_response(_reason(status), [*kept, *length])
        return [body]

    def respond(self, environ: dict[str, Any]) -> Response:
        declared = int(environ.get("CONTENT_LENGTH") or 0)
        if declared > MAX_PAYLOAD:
            _drain(environ["wsgi.input"], declared)
            return _too_large()
        body = environ["wsgi.input"].read(MAX_PAYLOAD + 1)
        event = json.dumps(function_url_event(environ, body)).encode()
        if len(body) > MAX_PAYLOAD or len(event) > MAX_PAYLOAD:
            return _too_large()
        with self.pool.lease(self.wait) as url:
            if url is None:
                return _message(429, "Rate Exceeded.")
            headers = {"Content-Type": "application/json"}
            answer = client.request(url, event, headers, self.timeout)
        return response_of(answer)


def _drain(stream: Any, declared: int) -> None:
    """Read a refused body (up to a bound) so that the client, still sending, reads the 413
    instead of a reset connection."""
    left = min(declared, 8 * MAX_PAYLOAD)
    while left > 0 and (chunk := stream.read(min(left, 1 << 20))):
        left -= len(chunk)


def _too_large() -> Response:
    return _message(413, f"Request must be smaller than {MAX_PAYLOAD} bytes for the invocation")


def serve(app: Front, bind: str, threads: int) -> None:
    """Serve ``app`` with gunicorn, one worker of ``threads`` threads, until stopped."""
    from gunicorn.app.base import BaseApplication

    options = {
        "bind": bind,
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 0,  # an invocation (a training) may take as long as the function's time-out
        "loglevel": "warning",
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Front:
            return app

    Server().run()


def command(urls: list[str], bind: str, timeout: float) -> list[str]:
    """The command of a front on ``bind`` (host:port) for the emulators at ``urls``."""
    args = [sys.executable, "-m", "milkprice.local.lambda_front", "--bind", bind]
    for url in urls:
        args += ["--emulator", url]
    return [*args, "--timeout", str(timeout)]


def start(
    name: str,
    urls: list[str],
    env: Mapping[str, str],
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout: float = 900.0,
    log: Path | None = None,
) -> tuple[processes.Process, str]:
    """A front for the emulators at ``urls`` (tests, the bench), and its base URL, once it
    listens (no request is sent: the emulators' first invocation stays the caller's)."""
    port = port or processes.free_port(host)
    proc = processes.start(name, command(urls, f"{host}:{port}", timeout), env, log=log)
    base = f"http://{host}:{port}"
    processes.wait_until(lambda: lambda_rie.listening(host, port), proc)
    return proc, base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", required=True, help="host:port to listen on")
    parser.add_argument("--emulator", action="append", required=True, help="invocations URL")
    parser.add_argument("--timeout", type=float, default=900.0, help="one invocation, seconds")
    parser.add_argument("--wait", type=float, default=900.0, help="for a free emulator, seconds")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    serve(Front(args.emulator, args.timeout, args.wait), args.bind, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
