"""The predict function's routes: which handler answers a request, and the request's one path.

``ROUTES`` maps each path template to its methods' handlers; a handler reads what its route
needs from the request (the body through ``bodies``, with the server socket's read deadline),
asks ``serving`` for the answer and shapes it. :func:`dispatch` is the whole life of a
request: it starts there, is matched to a route (:class:`Match`, with the route's template),
answered, and ends there with its status known, errors included (``serving.failure``).
Adding a route touches this module and the OpenAPI document (``openapi``) only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flask
import orjson
from werkzeug.sansio.utils import get_content_length

from milkprice import logs, metrics, tracing
from milkprice.errors import MethodNotAllowed, NotFound
from milkprice.predict import bodies, forwarded, openapi, serving
from milkprice.predict import metrics as predict_metrics
from milkprice.predict.binary import HEADER

Handler = Callable[[flask.Request, dict[str, str]], flask.Response]

SERVICE = "milkprice-predict"  # the traces' service name (OTEL_SERVICE_NAME wins over it)
METRICS = "/metrics"  # scraped every few seconds: neither counted nor traced itself
# Of the requests whose trace starts here, the share traced (a caller's sampled trace always
# is; OTEL_TRACES_SAMPLER overrides both): a traced request costs serving several times what
# an untraced one does (bench/README.md, "telemetry")
TRACED_SHARE = 0.01


class Match(NamedTuple):
    """A request's route: its template (``/v2/models/{name}/infer``), the handler of its
    method and the path's parameters (``{"name": ...}``)."""

    template: str
    handler: Handler
    params: dict[str, str]


def _json(doc: Any, headers: dict[str, str] | None = None) -> flask.Response:
    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return flask.Response(body, 200, headers, mimetype="application/json")


def _length(r: flask.Request) -> int | None:
    """The body's declared length, as ``r.content_length`` gives it, read from the environ
    (the property reads it through the headers' view: a few microseconds a request)."""
    e = r.environ
    return get_content_length(e.get("CONTENT_LENGTH"), e.get("HTTP_TRANSFER_ENCODING"))


def _bytes(r: flask.Request, binary: bool = False) -> bytes:
    e = r.environ
    sock = e.get("gunicorn.socket")  # a read deadline for stalled bodies
    # A server that ends the body itself (gunicorn says so) hands its own stream over, as
    # ``r.stream`` would, without the ten microseconds of checks it takes to say so; any
    # other server's is bounded by werkzeug. ``bodies`` never reads past the length anyway.
    stream = e["wsgi.input"] if e.get("wsgi.input_terminated") else r.stream
    with tracing.span("read body"):
        return bodies.body_bytes(e.get("CONTENT_TYPE"), stream, _length(r), sock, binary)


def _metrics(r: flask.Request, _: dict[str, str]) -> flask.Response:
    body, kind = metrics.scrape(r.headers.get("Accept"))
    return flask.Response(body, 200, {"Cache-Control": "no-store"}, content_type=kind)


def _base(r: flask.Request) -> str:
    """The URL clients call this function at (``forwarded``), for the page and the document."""
    return forwarded.base_url(r, serving.trusted_forwarded())


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
    METRICS: {"GET": _metrics},
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
STATIC = frozenset(t for t in ROUTES if "{" not in t)  # found by a lookup, not a pattern
# the others' literal parts match only themselves (a "." is a dot), a {name} one segment
PATTERNS = [
    (re.compile(re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(t))), t)
    for t in ROUTES
    if t not in STATIC
]


def locate(path: str) -> tuple[str, dict[str, str]]:
    """The template of the route a path falls under and the path's parameters; NotFound."""
    path = path.rstrip("/") or "/"
    if path in STATIC:
        return path, {}
    for pattern, template in PATTERNS:
        if found := pattern.fullmatch(path):
            return template, found.groupdict()
    raise NotFound(f"no route {path}; see /openapi.json")


def match(method: str, located: tuple[str, dict[str, str]]) -> Match:
    """The route of a request whose path fell under ``located`` (:func:`locate`);
    MethodNotAllowed with Allow when the method is not the route's (HEAD is GET's)."""
    template, params = located
    methods = ROUTES[template]
    if handler := methods.get("GET" if method == "HEAD" else method):
        return Match(template, handler, params)
    allow = ", ".join(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
    raise MethodNotAllowed(f"{method} {template}: use {allow}", headers={"Allow": allow})


def error_response(exc: Exception, request: flask.Request) -> flask.Response:
    """The JSON answer of an error (``serving.failure``)."""
    status, body, headers = serving.failure(exc, f"{request.method} {request.path}")
    # An error may leave a (too large) body unread: a streamed answer keeps it unread.
    response = flask.Response(iter([body]), status, headers, mimetype="application/json")
    response.headers["Content-Length"] = str(len(body))
    return response


_started = False


def _start() -> None:
    """The process's first request sets up its JSON log lines: not the import, nor the cache."""
    global _started
    if not _started:
        logs.setup("predict")
        _started = True


def dispatch(request: flask.Request) -> flask.Response:
    """One request, from start to answer: its length checked, its route matched, its handler
    called in the caller's trace (``tracing.continued``); any error becomes its JSON answer.
    A request no route matched (or refused before matching) is counted under one label, not
    one per unknown path; a scrape of ``/metrics`` is answered without being measured."""
    _start()
    started = time.perf_counter()
    template = None  # a wrong method is counted under its route's template
    try:
        bodies.check_length(_length(request))
        located = locate(request.path)
        template = located[0]
        found = match(request.method, located)
    except Exception as exc:
        return _ended(request, template, error_response(exc, request), started)
    if found.template == METRICS:
        return found.handler(request, found.params)
    name = f"{request.method} {found.template}"
    caller = tracing.incoming(request.headers)
    route = {"http.route": found.template}
    with tracing.continued(SERVICE, name, caller, TRACED_SHARE, **route):
        try:
            response = found.handler(request, found.params)
        except Exception as exc:
            response = error_response(exc, request)
        tracing.annotate(**{"http.response.status_code": response.status_code})
    return _ended(request, found.template, response, started)


def _ended(
    request: flask.Request, template: str | None, response: flask.Response, started: float
) -> flask.Response:
    """Where every request dispatched ends, its route's template and its status known,
    whichever way it went: counted and timed by route."""
    took = time.perf_counter() - started
    predict_metrics.observe(template, request.method, response.status_code, took)
    return response


def unrouted(request: flask.Request) -> flask.Response:
    """A path the Functions Framework's own rule does not match (a newline in it): JSON too."""
    _start()
    return error_response(NotFound(f"no route {request.path!r}; see /openapi.json"), request)
