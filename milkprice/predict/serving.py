"""The answers of the predict function's routes, and the one place errors become answers.

Each answer takes the process's current snapshot from the cache (``cache``; 503 until a model
is loaded) and hands it to the module that knows the answer: ``validation`` for /predict,
``v2`` for the KServe V2 routes, ``landing`` for the page and its chart. JSON documents come
back as Python objects, with headers where any; the entry point serializes them.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import numpy as np
import orjson

from milkprice import settings
from milkprice.errors import BadRequest, Conflict, MilkPriceError, to_response
from milkprice.predict import binary, cache, landing, v2
from milkprice.predict.bodies import members, parse_json
from milkprice.predict.validation import FAST_PATH_BYTES, check_body, fast_scores, score_rows

log = logging.getLogger("milkprice.predict")


def failure(exc: BaseException, what: str) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers of an error; the one place errors become answers."""
    code = getattr(exc, "code", None)
    if not isinstance(exc, MilkPriceError) and isinstance(code, int) and 400 <= code < 500:
        # werkzeug's own client errors, such as a body shorter than its Content-Length
        exc = MilkPriceError(str(getattr(exc, "description", "") or "bad request"), status=code)
    if not isinstance(exc, MilkPriceError):
        log.error("unhandled error on %s", what, exc_info=exc)
    status, body, headers = to_response(exc)
    return status, orjson.dumps(body), headers


def predict_rows(body: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """Prices of a /predict body: the fast path, else the full checks and their errors."""
    limit = settings.cached().max_rows
    try:
        loaded = cache.current()
    except MilkPriceError:
        check_body(body, limit)  # a bad body is named before a missing model
        raise
    if len(body) >= FAST_PATH_BYTES:
        prices, used = fast_scores(loaded, body, limit)
    else:
        prices, used = score_rows(loaded, parse_json(body), limit)
    return prices, {"X-Model-Version": loaded.version, "X-Model": used}


def forecast(months: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Next month's forecast; with ``months``, the first N months of the forecast path."""
    loaded = cache.current()
    headers = {"X-Model-Version": loaded.version}
    if months is None:
        return dict(loaded.forecast), headers
    if loaded.path is None:
        raise Conflict(
            f"model version {loaded.version} predates the forecast path: it has next month's "
            "forecast only (GET /forecast without months); a new training run adds the path"
        )
    n = _months(months, len(loaded.path))
    answer = {"model_version": loaded.version, "months": [dict(m) for m in loaded.path[:n]]}
    return answer, headers


def _months(text: str, horizon: int) -> int:
    """The ``months`` query parameter: a whole number from 1 to the path's horizon."""
    allowed = f"months must be a whole number from 1 to {horizon}"
    value = text.strip()
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= horizon:
        raise BadRequest(
            f"{allowed}, not {text!r}",
            [{"field": "months", "problem": allowed, "minimum": 1, "maximum": horizon}],
        )
    return int(value)


def accuracy() -> dict[str, Any]:
    """The forecast ledger: every served forecast scored, figures per horizon, the drift."""
    return dict(cache.server().ledger.current())


def chart() -> tuple[bytes, str, str]:
    """The backtest chart's PNG, the version and an ETag; 404 if the model has none."""
    return landing.chart(cache.current())


def trusted_forwarded() -> str:
    """Which X-Forwarded-* headers to follow: none, proto or all (a front end's to set)."""
    return settings.cached().trust_forwarded


def landing_page(base: str) -> str:
    """The landing page of the serving model, its examples addressed to ``base``, with the
    ledger's live accuracy when it can be read (the page does not wait on it otherwise)."""
    loaded = cache.current()
    try:
        ledger = cache.server().ledger.current()
    except MilkPriceError:
        ledger = None
    return landing.page(loaded, base, ledger)


def v2_server() -> dict[str, Any]:
    return v2.server_metadata()


def v2_ready(name: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Server readiness (a model is loaded), or a model's (a named version is loaded first);
    503 until a model is loaded."""
    return v2.ready(cache.named(version), name)


def v2_metadata(name: str, version: str | None = None) -> dict[str, Any]:
    loaded = cache.named(version)
    served = cache.current().version
    return v2.metadata(loaded, name, cache.server().versions.names(served))


def v2_infer(
    name: str, version: str | None, body: bytes, header: str | None
) -> tuple[bytes, dict[str, str], bool]:
    """An infer request's answer: its bytes, headers, and whether it carries binary data."""
    doc, tail = binary.split(body, header)
    loaded = cache.named(version)
    answer, data = v2.infer(loaded, name, doc, tail, settings.cached().max_rows)
    text = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"X-Model-Version": loaded.version}
    if data is None:
        return text, headers, False
    return text + data, {**headers, binary.HEADER: str(len(text))}, True


def v2_index(body: bytes) -> list[dict[str, str]]:
    only_ready = v2.index_request(members(body, ("ready",)) if body.strip() else {})
    return v2.index(cache.current(), cache.server().versions, only_ready)


def v2_refuse(name: str, action: str) -> NoReturn:
    v2.refuse(name, action)
