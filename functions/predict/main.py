"""Predict function: route, parse the body (``bodies``), call ``serving``, shape the answer.

Thin on purpose, and light: no pandas or scikit-learn is imported, directly or through milkprice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import flask
import functions_framework
import orjson

from milkprice.errors import MethodNotAllowed, NotFound
from milkprice.predict import bodies, openapi, serving
from milkprice.predict.binary import HEADER

Handler = Callable[[flask.Request, dict[str, str]], flask.Response]


def _json(doc: Any, headers: dict[str, str] | None = None) -> flask.Response:
    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return flask.Response(body, 200, headers, mimetype="application/json")


def _bytes(r: flask.Request, binary: bool = False) -> bytes:
    sock = r.environ.get("gunicorn.socket")  # a read deadline for stalled bodies
    kind = r.headers.get("Content-Type")
    return bodies.body_bytes(kind, r.stream, r.content_length, sock, binary)


def _infer(r: flask.Request, p: dict[str, str]) -> flask.Response:
    body = _bytes(r, binary=True)
    header = r.headers.get(HEADER)
    answer, headers, octets = serving.v2_infer(p["name"], p.get("version"), body, header)
    kind = "application/octet-stream" if octets else "application/json"
    return flask.Response(answer, 200, headers, mimetype=kind)


def _refuse(action: str) -> Handler:
    def refuse(r: flask.Request, p: dict[str, str]) -> flask.Response:
        serving.v2_refuse(p["name"], action)  # always raises: 404, or 403

    return refuse


# What a front end may forward, checked: a value of another shape is left out, never echoed.
HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
PREFIX = re.compile(r"(/[\w.~%!$&'()*+,;=:@-]+)+")


def _forwarded(r: flask.Request, name: str) -> str:
    return r.headers.get(name, "").split(",")[0].strip()  # the first proxy's, of a chain


def _base(r: flask.Request) -> str:
    """The URL clients call this function at: the scheme, host and path prefix a front end
    forwards (``X-Forwarded-Proto``, ``-Host``, ``-Prefix``), as far as
    ``MILKPRICE_TRUST_FORWARDED`` trusts them, then the WSGI ``SCRIPT_NAME``."""
    trusted = serving.trusted_forwarded()
    scheme = _forwarded(r, "X-Forwarded-Proto").lower() if trusted != "none" else ""
    host = _forwarded(r, "X-Forwarded-Host") if trusted == "all" else ""
    prefix = _forwarded(r, "X-Forwarded-Prefix").rstrip("/") if trusted == "all" else ""
    scheme = scheme if scheme in ("http", "https") else r.scheme
    host = host if HOST.fullmatch(host) else r.host
    prefix = prefix if PREFIX.fullmatch(prefix) else ""
    return f"{scheme}://{host}{prefix}{r.script_root}"


def _chart(r: flask.Request, _: dict[str, str]) -> flask.Response:
    png, version, etag = serving.chart()
    response = flask.Response(png, mimetype="image/png")
    response.headers.update({"Cache-Control": "no-cache", "X-Model-Version": version})
    response.set_etag(etag)
    response.make_conditional(r)
    return response


ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": lambda r, _: flask.Response(serving.landing_page(_base(r)))},
    "/backtest.png": {"GET": _chart},
    "/forecast": {"GET": lambda r, _: _json(*serving.forecast(r.args.get("months")))},
    "/accuracy": {"GET": lambda r, _: _json(serving.accuracy())},
    "/predict": {"POST": lambda r, _: _json(*serving.predict_rows(_bytes(r)))},
    "/openapi.json": {"GET": lambda r, _: _json(openapi.document(_base(r)))},
    "/v2": {"GET": lambda r, _: _json(serving.v2_server())},
    "/v2/health/live": {"GET": lambda r, _: _json({"live": True})},
    "/v2/health/ready": {"GET": lambda r, _: _json(serving.v2_ready())},
    "/v2/models/{name}": {"GET": lambda r, p: _json(serving.v2_metadata(p["name"]))},
    "/v2/models/{name}/ready": {"GET": lambda r, p: _json(serving.v2_ready(p["name"]))},
    "/v2/models/{name}/infer": {"POST": _infer},
    "/v2/models/{name}/versions/{version}": {
        "GET": lambda r, p: _json(serving.v2_metadata(p["name"], p["version"]))
    },
    "/v2/models/{name}/versions/{version}/ready": {
        "GET": lambda r, p: _json(serving.v2_ready(p["name"], p["version"]))
    },
    "/v2/models/{name}/versions/{version}/infer": {"POST": _infer},
    "/v2/repository/index": {"POST": lambda r, _: _json(serving.v2_index(_bytes(r)))},
    "/v2/repository/models/{name}/load": {"POST": _refuse("load")},
    "/v2/repository/models/{name}/unload": {"POST": _refuse("unload")},
}
PATTERNS = [(re.compile(re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", t)), t) for t in ROUTES]


def route(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """The handler of a request and its path parameters; 404, or 405 with Allow."""
    path = path.rstrip("/") or "/"
    for pattern, template in PATTERNS:
        if found := pattern.fullmatch(path):
            methods = ROUTES[template]
            if handler := methods.get("GET" if method == "HEAD" else method):
                return handler, found.groupdict()
            allow = ", ".join(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
            raise MethodNotAllowed(f"{method} {template}: use {allow}", headers={"Allow": allow})
    raise NotFound(f"no route {path}; see /openapi.json")


def _error(exc: Exception, request: flask.Request) -> flask.Response:
    status, body, headers = serving.failure(exc, f"{request.method} {request.path}")
    # An error may leave a (too large) body unread: a streamed answer keeps it unread.
    response = flask.Response(iter([body]), status, headers, mimetype="application/json")
    response.headers["Content-Length"] = str(len(body))
    return response


@functions_framework.errorhandler(404)
def _unrouted(_: Exception) -> flask.Response:
    """Paths functions-framework's own rule does not match (a newline in them) get JSON too."""
    return _error(NotFound(f"no route {flask.request.path!r}; see /openapi.json"), flask.request)


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    try:
        bodies.check_length(request.content_length)
        handler, params = route(request.method, request.path)
        return handler(request, params)
    except Exception as exc:
        return _error(exc, request)
