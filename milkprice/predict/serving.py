"""Serving: the model cache, request validation, predictions, KServe V2 shapes, landing page.

The predict function's core. It imports no pandas or scikit-learn (nor anything that does):
the models are served from their ONNX graphs by onnxruntime. The landing page's template is
``landing.html`` beside this module.

The cache is one immutable :class:`Loaded` snapshot (sessions, manifest, chart, forecast),
built lazily on the first request and swapped atomically when the pointer in the bucket moves.
The pointer's generation is checked on the request path, at most once per
``settings.reload_seconds``, by one request at a time; the others keep serving meanwhile. A
reload that fails keeps the old snapshot serving; before any snapshot exists the answer is 503.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from types import MappingProxyType
from typing import IO, Any

import numpy as np
import orjson
from google.api_core.retry import Retry

from milkprice import __version__, logs, store
from milkprice import settings as settings_module
from milkprice.errors import (
    BadRequest,
    MilkPriceError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    to_response,
)
from milkprice.predict import rows

log = logging.getLogger("milkprice.predict")

ROLES = ("forecast", "legacy")
ALIASES = MappingProxyType({"forecast": "forecast", "legacy": "legacy", "milk-price": "forecast"})
SERVER_NAME = "milk-price"
PLATFORM = "onnxruntime_onnx"
NUMBER = frozenset({int, float})  # what orjson gives for JSON numbers; bool is not one
V2_TYPES = MappingProxyType({"FP64": np.float64, "FP32": np.float32})
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_DETAILS = 50
CHUNK = 1 << 16
# The pointer check runs on a request: a short deadline, since a failed check only delays a
# reload (store's own retries would hold that request for up to 10 s while the bucket is away).
CHECK_RETRY = Retry(initial=0.05, maximum=0.25, multiplier=2.0, timeout=1.0)
CHECK_TIMEOUT = 1.0
# /predict bodies from this size on take the fast path (rows.py); a few rows parse faster the
# plain way (measured: 1 row 11 us plain, 21 us fast; 1000 old-format rows 24 ms, 11 ms)
FAST_PATH_BYTES = 32_768


class LoadError(MilkPriceError):
    """A model version that cannot be served as it is in the bucket (not a storage outage)."""

    status = 503


# ---------------------------------------------------------------- the snapshot


@dataclass(frozen=True, eq=False)
class Model:
    """One ONNX graph with what scoring rows for it needs, precomputed once per load."""

    role: str
    entry: Mapping[str, Any]  # the model's manifest entry
    features: tuple[str, ...]  # in the graph's column order
    feature_set: frozenset[str]
    columns: Mapping[str, int]  # feature name -> column
    take: Callable[[dict[str, Any]], tuple[Any, ...]]  # a row's values in column order
    session: Any  # onnxruntime.InferenceSession
    input: str
    output: str

    def run(self, X: np.ndarray) -> np.ndarray:
        return np.ravel(self.session.run([self.output], {self.input: X})[0])

    def matrix(self, rows: list[dict[str, Any]], positions: list[int] | None) -> np.ndarray:
        """The float64 matrix of rows that carry every feature; 400 names a row and field that
        is not a number (``score`` checks that numbers are finite)."""
        values = list(map(self.take, rows))
        if not set(map(type, chain.from_iterable(values))) <= NUMBER:
            raise self._not_numbers(values, positions)
        return np.fromiter(
            chain.from_iterable(values), dtype=np.float64, count=len(values) * len(self.features)
        ).reshape(len(values), len(self.features))

    def score(self, X: np.ndarray, positions: list[int] | None) -> np.ndarray:
        """Prices of finite rows; 400 names a row with a value, or a price, that is not finite.

        ``positions`` are the rows' places in the request when ``X`` holds only some of them.
        """
        check_finite(X, self.features, positions)
        prices = self.run(X)
        finite = np.isfinite(prices)
        if not finite.all():
            r = int(np.argmin(finite))
            row = positions[r] if positions is not None else r
            raise BadRequest(
                f"row {row}: the {self.role} model gives no finite price for these values",
                [{"row": row, "problem": "values out of the model's range: no finite price"}],
            )
        return prices

    def _not_numbers(
        self, values: list[tuple[Any, ...]], positions: list[int] | None
    ) -> BadRequest:
        for r, row_values in enumerate(values):
            bad = [
                (name, value)
                for name, value in zip(self.features, row_values, strict=True)
                if type(value) not in NUMBER
            ]
            if bad:
                row = positions[r] if positions is not None else r
                details = [
                    {"row": row, "field": name, "problem": f"{json_type(value)} is not a number"}
                    for name, value in bad[:MAX_DETAILS]
                ]
                names = ", ".join(name for name, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
                return BadRequest(f"row {row}: not a number: {names}", details)
        return BadRequest("a value is not a number")  # unreachable: the set said otherwise


@dataclass(frozen=True, eq=False)
class Loaded:
    """Everything one model version serves; never changed, only replaced."""

    version: str
    generation: int  # of the pointer object that named this version
    pointer: Mapping[str, Any]
    manifest: Mapping[str, Any]
    models: Mapping[str, Model]
    chart: bytes | None
    chart_sha256: str | None
    forecast: Mapping[str, Any]  # the /forecast answer, computed at load
    loaded: str  # when this process loaded it (UTC)
    decoder: rows.Decoder  # /predict bodies straight to a matrix of both models' features
    columns: Mapping[str, np.ndarray]  # role -> its features' columns in that matrix


def check_finite(X: np.ndarray, features: tuple[str, ...], positions: list[int] | None) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    r, c = (int(i) for i in np.argwhere(~finite)[0])
    row = positions[r] if positions is not None else r
    raise BadRequest(
        f"row {row}: {features[c]} is not a finite number",
        [{"row": row, "field": features[c], "problem": "not a finite number"}],
    )


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _taker(features: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if len(features) == 1:
        name = features[0]
        return lambda row: (row[name],)
    return itemgetter(*features)


def _session(data: bytes) -> Any:
    # Imported here, in the serving process: functions-framework imports this module in the
    # gunicorn master before forking, and onnxruntime's global state inherited across a fork
    # aborts the worker when it exits ("std::system_error: Invalid argument").
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _fetch(settings: settings_module.Settings, version: str, name: str, expected: Any) -> bytes:
    """An artifact's bytes, only if their sha256 is the manifest's."""
    if not isinstance(expected, str) or not isinstance(name, str) or "/" in name:
        raise LoadError(f"version {version}: the manifest gives no usable sha256 for {name!r}")
    blob = store.read(settings, store.model_path(version, name))
    if blob is None:
        raise LoadError(f"version {version}: {name} is missing")
    digest = hashlib.sha256(blob.data).hexdigest()
    if digest != expected:
        raise LoadError(
            f"version {version}: {name} has sha256 {digest[:12]}..., "
            f"the manifest says {expected[:12]}..."
        )
    return blob.data


def _model(
    settings: settings_module.Settings, version: str, role: str, manifest: dict[str, Any]
) -> Model:
    try:
        entry = manifest["models"][role]
        features = tuple(entry["features"])
        onnx_name = entry["onnx"]
        expected = entry["sha256"][onnx_name]
    except (KeyError, TypeError) as exc:
        raise LoadError(f"version {version}: manifest entry of the {role} model: {exc!r}") from None
    if not features or not all(isinstance(f, str) for f in features):
        raise LoadError(f"version {version}: the {role} model has no usable feature names")
    if len(set(features)) != len(features):
        raise LoadError(f"version {version}: the {role} model repeats a feature name")
    if manifest.get("files", {}).get(onnx_name, expected) != expected:
        raise LoadError(f"version {version}: two different sha256 for {onnx_name}")
    try:
        session = _session(_fetch(settings, version, onnx_name, expected))
    except LoadError:
        raise
    except MilkPriceError:
        raise
    except Exception as exc:  # onnxruntime refuses the graph
        raise LoadError(f"version {version}: {onnx_name} is no usable ONNX graph: {exc}") from None
    [graph_input] = session.get_inputs()
    width = graph_input.shape[1] if len(graph_input.shape) == 2 else None
    if width != len(features):
        raise LoadError(
            f"version {version}: {onnx_name} takes {width} columns, the manifest names "
            f"{len(features)} features"
        )
    return Model(
        role=role,
        entry=MappingProxyType(dict(entry)),
        features=features,
        feature_set=frozenset(features),
        columns=MappingProxyType({name: i for i, name in enumerate(features)}),
        take=_taker(features),
        session=session,
        input=graph_input.name,
        output=session.get_outputs()[0].name,
    )


def load(settings: settings_module.Settings) -> Loaded | None:
    """Read the pointer and build the snapshot of the version it names; None if no pointer."""
    pointer_blob = store.read(settings, store.POINTER)
    if pointer_blob is None:
        return None
    try:
        pointer = orjson.loads(pointer_blob.data)
        version = pointer["version"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise LoadError(f"{store.POINTER} names no version") from None
    if not isinstance(version, str) or not VERSION_NAME.match(version) or ".." in version:
        raise LoadError(f"{store.POINTER} names no valid version: {version!r}")
    manifest_blob = store.read(settings, store.model_path(version, "manifest.json"))
    if manifest_blob is None:
        raise LoadError(f"version {version}: manifest.json is missing")
    try:
        manifest = orjson.loads(manifest_blob.data)
    except orjson.JSONDecodeError:
        raise LoadError(f"version {version}: manifest.json is not JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise LoadError(f"version {version}: manifest.json lists no models")
    models = {role: _model(settings, version, role, manifest) for role in ROLES}
    chart = chart_sha = None
    chart_name = (manifest.get("backtest") or {}).get("chart")
    if chart_name:
        chart_sha = (manifest.get("files") or {}).get(chart_name)
        chart = _fetch(settings, version, chart_name, chart_sha)
    forecast = models["forecast"]
    try:
        month = str(manifest["next"]["month"])
        values = manifest["next"]["features"]
        row = [[values[name] for name in forecast.features]]
        X = np.array(row, dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(
            f"version {version}: the manifest's next row is unusable: {exc!r}"
        ) from None
    price = float(forecast.run(X)[0])
    if not np.isfinite(price):
        raise LoadError(f"version {version}: the forecast of {month} is not finite")
    union = forecast.features + tuple(
        f for f in models["legacy"].features if f not in forecast.feature_set
    )
    where = {name: i for i, name in enumerate(union)}
    return Loaded(
        version=version,
        generation=pointer_blob.generation,
        pointer=MappingProxyType(dict(pointer)),
        manifest=MappingProxyType(manifest),
        models=MappingProxyType(models),
        chart=chart,
        chart_sha256=chart_sha,
        forecast=MappingProxyType(_forecast_answer(manifest, month, price, version)),
        loaded=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        decoder=rows.decoder(union),
        columns=MappingProxyType(
            {r: np.array([where[f] for f in m.features], dtype=np.intp) for r, m in models.items()}
        ),
    )


def _forecast_answer(
    manifest: dict[str, Any], month: str, price: float, version: str
) -> dict[str, Any]:
    answer: dict[str, Any] = {"month": month, "price": price, "model_version": version}
    spec = manifest["models"]["forecast"].get("interval")
    if isinstance(spec, dict):
        try:
            low, high = float(spec["lower_ratio"]), float(spec["upper_ratio"])
            answer["interval"] = {
                "level": float(spec["level"]),
                "lower": price * (1 + low),
                "upper": price * (1 + high),
            }
        except (KeyError, TypeError, ValueError):
            log.warning("version %s: the forecast interval is unusable", version)
    return answer


# ---------------------------------------------------------------- the cache


def pointer_generation(settings: settings_module.Settings) -> int | None:
    """The pointer's live generation, or None, with a deadline short enough for a request."""
    return store.generation(settings, store.POINTER, CHECK_RETRY, CHECK_TIMEOUT)


class Server:
    """The process's model cache: the current snapshot and when to look at the pointer next."""

    def __init__(self, settings: settings_module.Settings | None = None) -> None:
        logs.setup("predict")
        self.settings = settings if settings is not None else settings_module.load()
        self.interval = max(0.0, float(self.settings.reload_seconds))
        self.retry_after = max(1, int(np.ceil(self.interval)))
        self._loaded: Loaded | None = None
        self._next_check = 0.0
        self._reason = "no model is loaded yet"
        self._bad_generation: int | None = None
        self._outages = 0  # storage failures in a row: the checks back off while serving
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Loaded | None:
        return self._loaded

    def current(self) -> Loaded:
        """The snapshot to serve; looks at the pointer only when the interval has passed."""
        loaded = self._loaded
        if loaded is not None and time.monotonic() < self._next_check:
            return loaded
        # One request checks; while it does, the others serve the snapshot they have.
        if not self._lock.acquire(blocking=loaded is None):
            return loaded  # type: ignore[return-value]  # blocking=False only when loaded
        try:
            if time.monotonic() < self._next_check:
                return self._serving()
            try:
                self._check()
            finally:
                self._next_check = time.monotonic() + self.delay()
            return self._serving()
        finally:
            self._lock.release()

    def delay(self) -> float:
        """Seconds to the next pointer check: the interval, doubled per storage failure in a
        row while a model is serving (up to a minute); without one, keep trying every interval."""
        if self._loaded is None or not self._outages:
            return self.interval
        return max(self.interval, min(MAX_BACKOFF, self.interval * 2**self._outages))

    def _serving(self) -> Loaded:
        if self._loaded is None:
            raise NotReady(self._reason, self.retry_after)
        return self._loaded

    def _check(self) -> None:
        loaded = self._loaded
        serving = loaded.version if loaded else None
        try:
            generation = pointer_generation(self.settings)
        except MilkPriceError as exc:
            self._outages += 1
            self._failed(
                "checking the model pointer failed", exc, serving, "storage is unavailable"
            )
            return
        self._outages = 0
        if generation is None:
            if loaded is not None:
                log.warning(
                    "%s is gone; still serving version %s",
                    store.POINTER,
                    serving,
                    extra={"version": serving},
                )
            self._reason = "no model has been promoted yet"
            return
        if (loaded is not None and generation == loaded.generation) or (
            generation == self._bad_generation
        ):
            return
        try:
            new = load(self.settings)
        except LoadError as exc:
            self._bad_generation = generation  # not retried until the pointer moves again
            self._failed("loading the promoted model failed", exc, serving, exc.message)
            return
        except MilkPriceError as exc:  # storage: try again at the next check
            self._outages += 1
            self._failed(
                "loading the promoted model failed", exc, serving, "storage is unavailable"
            )
            return
        except Exception as exc:  # a bug: never let it take the serving model down
            self._bad_generation = generation
            self._failed("loading the promoted model failed", exc, serving, "it could not be read")
            return
        if new is None:
            self._reason = "no model has been promoted yet"
            return
        self._loaded = new
        self._bad_generation = None
        log.info(
            "serving model version %s (was %s)",
            new.version,
            serving,
            extra={"version": new.version},
        )

    def _failed(self, what: str, exc: BaseException, serving: str | None, reason: str) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        trace = None if isinstance(exc, MilkPriceError) else exc  # a bug: keep its stack
        now = f"still serving version {serving}" if serving else "no model to serve yet"
        log.error(
            "%s; %s: %s; next check in %.1f s",
            what,
            now,
            message,
            self.delay(),
            exc_info=trace,
            extra={"version": serving},
        )
        self._reason = f"no model is loaded yet: {reason}"


MAX_BACKOFF = 60.0

_server: Server | None = None
_server_lock = threading.Lock()


def server() -> Server:
    """The process's one cache, built on first use (not at import)."""
    global _server
    found = _server
    if found is None:
        with _server_lock:
            if _server is None:
                _server = Server()
            found = _server
    return found


def reset() -> None:
    """Forget the cache and settings (a new process, as far as serving can tell)."""
    global _server
    with _server_lock:
        _server = None


def current() -> Loaded:
    return server().current()


def settings() -> settings_module.Settings:
    return server().settings


# ---------------------------------------------------------------- requests


def is_json(content_type: str | None) -> bool:
    """True for application/json and application/*+json, with any parameters; absent is JSON."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def check_length(length: int | None) -> None:
    """413 for a declared body above the limit, before anything reads it."""
    limit = settings().max_body_bytes
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
                f"for {settings().body_timeout:g} s"
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
    content_type: str | None, stream: IO[bytes], length: int | None, sock: Any = None
) -> bytes:
    """A POST body's bytes: 415 unless JSON, 413 above the limit, 408 if it stalls.

    ``sock`` is the connection's socket when the server gives it (gunicorn does): reading
    gets a deadline, so a client that declares more than it sends holds a thread for
    ``body_timeout`` seconds, not for ever. After a stalled body the deadline stays, and the
    server gives the connection up when it tries to read the rest.
    """
    if not is_json(content_type):
        raise UnsupportedMediaType(f"send application/json, not {content_type}")
    if sock is not None:
        sock.settimeout(settings().body_timeout)
    body = read_body(stream, length, settings().max_body_bytes)
    if sock is not None:
        sock.settimeout(None)  # the answer is written without one
    return body


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


# ---------------------------------------------------------------- /predict


def _missing(i: int, row: dict[str, Any], models: Iterable[Model]) -> BadRequest:
    """The error for a row no model can score: it names what the nearest model lacks.

    Nearest is the model whose features the row has the largest share of, so an old client's
    row missing one of the legacy model's 141 features hears about that one, not about the
    forecast model's few features it never meant to send.
    """
    nearest = max(models, key=lambda m: len(m.feature_set & row.keys()) / len(m.feature_set))
    missing = [name for name in nearest.features if name not in row]
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    return BadRequest(
        f"row {i} has neither every feature of the forecast model nor every feature of the "
        f"legacy model; nearest is the {nearest.role} model, which also needs {len(missing)}: "
        f"{shown}",
        [
            {"row": i, "field": name, "problem": f"missing (the {nearest.role} model needs it)"}
            for name in missing
        ],
    )


def fast_scores(loaded: Loaded, body: bytes, max_rows: int) -> tuple[np.ndarray, str] | None:
    """``score_rows`` for a body that needs none of its errors, or None (see ``rows``)."""
    X = rows.matrix(loaded.decoder, body, max_rows)
    if X is None:
        return None
    present = ~np.isnan(X)
    new = present[:, loaded.columns["forecast"]].all(axis=1)
    old = ~new & present[:, loaded.columns["legacy"]].all(axis=1)
    if not (new | old).all():
        return None
    prices = np.empty(len(X), dtype=np.float64)
    used = []
    for role, chosen in (("forecast", new), ("legacy", old)):
        if not chosen.any():
            continue
        used.append(role)
        model, every = loaded.models[role], chosen.all()
        positions = None if every else np.flatnonzero(chosen).tolist()
        sub = X[:, loaded.columns[role]] if every else X[np.ix_(chosen, loaded.columns[role])]
        prices[chosen] = model.score(sub, positions)
    return prices, ",".join(used)


def score_rows(loaded: Loaded, doc: Any, max_rows: int) -> tuple[np.ndarray, str]:
    """Prices of ``{"data": [row, ...]}`` in row order, and which models scored them.

    A row carrying every feature of the forecast model is scored by it, else a row carrying
    every feature of the legacy model by that one; other keys are ignored.
    """
    if type(doc) is not dict:
        raise BadRequest(
            'the body must be an object {"data": [row, ...]}',
            [{"field": "data", "problem": f"the body is {json_type(doc)}, not an object"}],
        )
    rows = doc.get("data")
    if type(rows) is not list:
        problem = "missing" if "data" not in doc else f"{json_type(rows)}, not an array"
        raise BadRequest("data must be an array of rows", [{"field": "data", "problem": problem}])
    if not rows:
        raise BadRequest("data is empty", [{"field": "data", "problem": "no rows"}])
    if len(rows) > max_rows:
        raise PayloadTooLarge(
            f"{len(rows)} rows; at most {max_rows} are accepted per request",
            [{"field": "data", "problem": f"more than {max_rows} rows"}],
        )
    forecast, legacy = loaded.models["forecast"], loaded.models["legacy"]
    fset, lset = forecast.feature_set, legacy.feature_set
    old: list[int] = []
    new: list[int] = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise BadRequest(
                f"row {i} is not an object",
                [{"row": i, "problem": f"{json_type(row)}, not an object"}],
            )
        keys = row.keys()
        if keys >= fset:
            new.append(i)
        elif keys >= lset:
            old.append(i)
        else:
            raise _missing(i, row, (forecast, legacy))
    if not old:
        return forecast.score(forecast.matrix(rows, None), None), "forecast"
    if not new:
        return legacy.score(legacy.matrix(rows, None), None), "legacy"
    prices = np.empty(len(rows), dtype=np.float64)
    for m, positions in ((forecast, new), (legacy, old)):
        prices[positions] = m.score(m.matrix([rows[i] for i in positions], positions), positions)
    return prices, "forecast,legacy"


# ---------------------------------------------------------------- KServe V2


def v2_server() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": []}


def model(loaded: Loaded, name: str) -> Model:
    role = ALIASES.get(name)
    if role is None:
        raise NotFound(
            f"no model named {name!r}; the models are {', '.join(ALIASES)}",
            [{"field": "name", "problem": "unknown model"}],
        )
    return loaded.models[role]


def metadata(loaded: Loaded, name: str) -> dict[str, Any]:
    m = model(loaded, name)
    return {
        "name": name,
        "versions": [loaded.version],
        "platform": PLATFORM,
        "inputs": [{"name": m.input, "datatype": "FP64", "shape": [-1, len(m.features)]}],
        "outputs": [{"name": m.output, "datatype": "FP64", "shape": [-1, 1]}],
        "parameters": {
            "role": m.role,
            "feature_names": list(m.features),
            "candidate": m.entry.get("candidate"),
            "description": m.entry.get("description"),
            "unit": loaded.manifest.get("unit"),
        },
    }


def _tensor_error(field: str, problem: str) -> BadRequest:
    return BadRequest(
        f"inputs[0].{field}: {problem}", [{"field": f"inputs[0].{field}", "problem": problem}]
    )


def infer(loaded: Loaded, name: str, doc: Any, max_rows: int) -> dict[str, Any]:
    """A V2 inference request: one tensor [N, F], columns in the manifest's feature order."""
    m = model(loaded, name)
    width = len(m.features)
    if type(doc) is not dict:
        raise BadRequest(
            "the body must be a V2 inference request object",
            [{"field": "inputs", "problem": f"the body is {json_type(doc)}, not an object"}],
        )
    inputs = doc.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise BadRequest(
            "inputs must be an array of exactly one tensor object",
            [{"field": "inputs", "problem": "not an array of one tensor object"}],
        )
    tensor = inputs[0]
    shape = tensor.get("shape")
    if type(shape) is not list or len(shape) != 2 or not all(type(s) is int for s in shape):
        raise _tensor_error("shape", f"must be [N, {width}]")
    n, f = shape
    if f != width:
        raise _tensor_error("shape", f"the {m.role} model takes {width} columns, not {f}")
    if n < 1:
        raise _tensor_error("shape", "N must be at least 1")
    if n > max_rows:
        raise PayloadTooLarge(
            f"{n} rows; at most {max_rows} are accepted per request",
            [{"field": "inputs[0].shape", "problem": f"more than {max_rows} rows"}],
        )
    datatype = tensor.get("datatype")
    dtype = V2_TYPES.get(datatype) if type(datatype) is str else None
    if dtype is None:
        raise _tensor_error("datatype", f"must be FP64 or FP32, not {datatype!r}")
    data = tensor.get("data")
    if type(data) is not list:
        raise _tensor_error("data", f"must be an array, not {json_type(data)}")
    if data and type(data[0]) is list:
        if not all(type(r) is list for r in data):
            raise _tensor_error("data", "mixes nested rows and numbers")
        data = list(chain.from_iterable(data))
    if len(data) != n * width:
        raise _tensor_error(
            "data", f"holds {len(data)} values; shape [{n}, {width}] needs {n * width}"
        )
    if not set(map(type, data)) <= NUMBER:
        k = next(k for k, v in enumerate(data) if type(v) not in NUMBER)
        row, column = divmod(k, width)
        name_ = m.features[column]
        raise BadRequest(
            f"row {row}: {name_} is not a number",
            [{"row": row, "field": name_, "problem": f"{json_type(data[k])} is not a number"}],
        )
    X = np.fromiter(data, dtype=np.float64, count=n * width).reshape(n, width)
    if dtype is np.float32:
        with np.errstate(over="ignore"):
            X = X.astype(np.float32).astype(np.float64)
    prices = m.score(X, None)
    answer: dict[str, Any] = {"model_name": name, "model_version": loaded.version}
    if doc.get("id") is not None:
        answer["id"] = str(doc["id"])
    answer["outputs"] = [{"name": m.output, "shape": [n, 1], "datatype": "FP64", "data": prices}]
    return answer


# ---------------------------------------------------------------- answers of the routes
# Each serves the process's current snapshot; JSON documents, with headers where any.


def predict_rows(body: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """Prices of a /predict body: the fast path, else the full checks and their errors."""
    try:
        loaded = current()
    except MilkPriceError:
        parse_json(body)  # a bad body is named before a missing model
        raise
    limit = settings().max_rows
    fast = fast_scores(loaded, body, limit) if len(body) >= FAST_PATH_BYTES else None
    scored = fast or score_rows(loaded, parse_json(body), limit)
    prices, used = scored
    return prices, {"X-Model-Version": loaded.version, "X-Model": used}


def forecast() -> tuple[dict[str, Any], dict[str, str]]:
    loaded = current()
    return dict(loaded.forecast), {"X-Model-Version": loaded.version}


def chart() -> tuple[bytes, str, str]:
    """The backtest chart's PNG, the version and an ETag; 404 if the model has none."""
    loaded = current()
    if loaded.chart is None:
        raise NotFound(f"model version {loaded.version} has no backtest chart")
    return loaded.chart, loaded.version, loaded.chart_sha256 or loaded.version


def v2_ready(name: str | None = None) -> dict[str, Any]:
    """Server readiness (a model is loaded), or a model's; 503 until a model is loaded."""
    loaded = current()
    if name is None:
        return {"ready": True}
    model(loaded, name)
    return {"name": name, "ready": True}


def v2_metadata(name: str) -> dict[str, Any]:
    return metadata(current(), name)


def v2_infer(name: str, doc: Any) -> tuple[dict[str, Any], dict[str, str]]:
    loaded = current()
    return infer(loaded, name, doc, settings().max_rows), {"X-Model-Version": loaded.version}


# ---------------------------------------------------------------- the landing page


@functools.cache
def _landing_template() -> Any:
    import jinja2  # comes with flask; only the landing page needs it

    text = (
        importlib.resources.files(__package__ or "milkprice.predict")
        .joinpath("landing.html")
        .read_text("utf-8")
    )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(text)


def landing_context(loaded: Loaded, base: str) -> dict[str, Any]:
    manifest = loaded.manifest
    models = {role: dict(m.entry) for role, m in loaded.models.items()}
    forecast = loaded.models["forecast"]
    values = manifest["next"]["features"]
    row = {name: values[name] for name in forecast.features}
    backtest = manifest.get("backtest") or {}
    tensor = {
        "name": forecast.input,
        "shape": [1, len(forecast.features)],
        "datatype": "FP64",
        "data": list(row.values()),
    }
    return {
        "base": base.rstrip("/"),
        "unit": manifest.get("unit", "CLP per litre"),
        "version": loaded.version,
        "manifest": manifest,
        "pointer": loaded.pointer,
        "loaded": loaded.loaded,
        "forecast": loaded.forecast,
        "models": models,
        "naive": models["forecast"].get("naive") or {"rmse": 0.0, "mae": 0.0, "mape": 0.0},
        "months": backtest.get("months") or ["?"],
        "long_months": backtest.get("long_months") or [],
        "method": backtest.get("method", ""),
        "chart": loaded.chart is not None,
        "candidates": manifest.get("candidates") or [],
        "inputs": manifest.get("inputs") or {},
        "cleaning": manifest.get("cleaning") or {},
        "predict_body": orjson.dumps({"data": [row]}).decode(),
        "v2_body": orjson.dumps({"id": "1", "inputs": [tensor]}).decode(),
    }


def landing(base: str) -> str:
    """The landing page of the serving model, its examples addressed to ``base``."""
    return str(_landing_template().render(landing_context(current(), base)))
