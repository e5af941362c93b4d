"""The KServe V2 (Open Inference Protocol) answers: server and model metadata, readiness, infer,
the repository index.

Each takes the snapshot to answer from; the models are ``forecast`` and ``legacy``, with
``milk-price`` another name of ``forecast``. An inference request is one tensor ``[N, F]``
whose columns are the model's features in the manifest's order, its values in the JSON or,
with the binary tensor data extension (``binary``), as bytes after it.
"""

from __future__ import annotations

import re
from itertools import chain
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np

from milkprice import __version__
from milkprice.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from milkprice.predict import binary
from milkprice.predict.bodies import parse_json, stand_in
from milkprice.predict.model import Model
from milkprice.predict.snapshot import Loaded
from milkprice.predict.validation import NUMBER, json_type
from milkprice.predict.versions import Versions

ALIASES = MappingProxyType({"forecast": "forecast", "legacy": "legacy", "milk-price": "forecast"})
SERVER_NAME = "milk-price"
PLATFORM = "onnxruntime_onnx"
V2_TYPES = MappingProxyType({"FP64": np.float64, "FP32": np.float32})
# load and unload answer 403: this server serves what the bucket's pointer names
EXTENSIONS = (binary.EXTENSION, "model_repository")


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model(loaded: Loaded, name: str) -> Model:
    role = ALIASES.get(name)
    if role is None:
        model_not_found(name)
    return loaded.models[role]


def model_not_found(name: str) -> NoReturn:
    raise NotFound(
        f"no model named {name!r}; the models are {', '.join(ALIASES)}",
        [{"field": "name", "problem": "unknown model"}],
    )


def ready(loaded: Loaded, name: str | None) -> dict[str, Any]:
    """Server readiness (``loaded`` is there), or a model's; 404 for an unknown model."""
    if name is None:
        return {"ready": True}
    model(loaded, name)
    return {"name": name, "ready": True}


def metadata(loaded: Loaded, name: str, versions: list[str]) -> dict[str, Any]:
    """A model's metadata; ``versions`` are those that can be asked for, the served first."""
    m = model(loaded, name)
    return {
        "name": name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [{"name": m.input, "datatype": "FP64", "shape": [-1, len(m.features)]}],
        "outputs": [{"name": m.output, "datatype": "FP64", "shape": [-1, 1]}],
        "parameters": {
            "role": m.role,
            "feature_names": list(m.features),
            "candidate": m.entry.candidate,
            "description": m.entry.description,
            "unit": loaded.manifest.unit,
        },
    }


def infer(
    loaded: Loaded, name: str, doc: Any, tail: memoryview, max_rows: int
) -> tuple[dict[str, Any], bytes | None]:
    """A V2 inference request: one tensor [N, F], columns in the manifest's feature order.

    ``tail`` holds the bytes after the request's JSON (binary tensor data). The answer's JSON
    and, when the output is asked for as binary data, the bytes that follow it.
    """
    m = model(loaded, name)
    tensor = _tensor(doc)
    n, dtype = _shape_and_type(tensor, m, max_rows)
    as_binary = binary.wants_binary(doc, m.output)
    X = binary.matrix(tensor, tail, n, len(m.features), dtype)
    if X is None:
        X = _matrix(tensor.get("data"), m, n)
        if dtype is np.float32:
            with np.errstate(over="ignore"):
                X = X.astype(np.float32).astype(np.float64)
    prices = m.score(X, None)
    answer: dict[str, Any] = {"model_name": name, "model_version": loaded.version}
    if doc.get("id") is not None:
        answer["id"] = str(doc["id"])
    out: dict[str, Any] = {"name": m.output, "shape": [n, 1], "datatype": "FP64"}
    tail_out = None
    if as_binary:
        out["parameters"], tail_out = binary.output(prices)
    else:
        out["data"] = prices
    answer["outputs"] = [out]
    return answer, tail_out


def index(served: Loaded, versions: Versions, only_ready: bool) -> list[dict[str, str]]:
    """The repository index: every model name and version, with its state."""
    entries = []
    for version in versions.names(served.version):
        state, reason = versions.state(version, served.version)
        if only_ready and state != "READY":
            continue
        for name in ALIASES:
            entry = {"name": name, "version": version, "state": state}
            entries.append({**entry, "reason": reason} if reason else entry)
    return entries


def index_request(doc: Any) -> bool:
    """Whether an index request asks for the ready models only (an empty body: no)."""
    ready = doc.get("ready", False) if type(doc) is dict else None
    if type(ready) is not bool:
        raise BadRequest(
            "the body must be an object whose ready, if any, is true or false",
            [{"field": "ready", "problem": "not an object with a boolean ready"}],
        )
    return ready


def refuse(name: str, action: str) -> NoReturn:
    """Load and unload: 404 for an unknown model, else 403 (the pointer decides)."""
    if name not in ALIASES:
        model_not_found(name)
    raise Forbidden(
        f"{action} {name}: this server serves the version models/current.json names and "
        "loads any other version when a request names it; to serve another version, move the "
        "pointer (milkprice rollback VERSION)",
        [{"field": "name", "problem": f"{action} is not offered"}],
    )


def _tensor_error(field: str, problem: str) -> BadRequest:
    return BadRequest(
        f"inputs[0].{field}: {problem}", [{"field": f"inputs[0].{field}", "problem": problem}]
    )


def _tensor(doc: Any) -> dict[str, Any]:
    """The one input tensor of a request; 400 unless the body holds exactly one."""
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
    tensor: dict[str, Any] = inputs[0]
    return tensor


def _shape_and_type(tensor: dict[str, Any], m: Model, max_rows: int) -> tuple[int, Any]:
    """The tensor's row count N, checked against the model and the limit, and its dtype."""
    width = len(m.features)
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
    return n, dtype


def _matrix(text: bytes | None, m: Model, n: int) -> np.ndarray:
    """The tensor's data (its JSON text), flat or nested by row, as an ``[n, F]`` matrix."""
    width = len(m.features)
    data = _numbers(text, m, n)
    if data and type(data[0]) is list:
        if not all(type(r) is list for r in data):
            raise _tensor_error("data", "mixes nested rows and numbers")
        for i, r in enumerate(data):
            if len(r) != width:
                raise _ragged(i, len(r), m)
        data = list(chain.from_iterable(data))
    if len(data) != n * width:
        raise _count(len(data), n, width)
    if not set(map(type, data)) <= NUMBER:
        k = next(k for k, v in enumerate(data) if type(v) not in NUMBER)
        raise _not_a_number(*divmod(k, width), json_type(data[k]), m)
    return np.fromiter(data, dtype=np.float64, count=n * width).reshape(n, width)


NOT_NUMERIC = re.compile(rb"[^0-9eE+\-.,\[\]\s]")  # a byte of no number and no array


def _numbers(text: bytes | None, m: Model, n: int) -> list[Any]:
    """The tensor's data parsed, once its bytes show that the parse costs no more than its
    numbers: it holds only numbers and arrays, no more arrays than rows, and, flat, the
    values its shape needs. (A JSON parser builds a 56-byte list for each 3-byte ``[],``.)"""
    width = len(m.features)
    if text is None or text[:1] != b"[":
        raise _tensor_error("data", f"must be an array, not {json_type(stand_in(text or b'n'))}")
    bad = NOT_NUMERIC.search(text)
    if bad is not None:
        raise _not_a_number_at(text, bad.start(), m, n)
    arrays = text.count(b"[")
    if arrays > n + 1:
        raise _tensor_error("data", f"holds {arrays - 1} arrays; shape [{n}, {width}] has {n} rows")
    if arrays == 1:
        values = text.count(b",") + 1 if text[1:-1].strip() else 0
        if values != n * width:
            raise _count(values, n, width)
    data: list[Any] = parse_json(text)
    return data


def _not_a_number_at(text: bytes, at: int, m: Model, n: int) -> BadRequest:
    """The error for the value at byte ``at``, the first byte of data that is no number and no
    array (so that what comes before it is numbers, commas and brackets only)."""
    width = len(m.features)
    opened = text.count(b"[", 0, at)
    depth = opened - text.count(b"]", 0, at)
    column = text.count(b",", text.rfind(b"[", 0, at), at)
    if depth == 1 and opened == 1:  # flat
        row, column = divmod(column, width)
    elif depth == 2:  # in a row
        row = opened - 2
        if column >= width:
            return _ragged(row, column + 1, m, "at least ")
    elif depth == 1:
        return _tensor_error("data", "mixes nested rows and numbers")
    else:
        return _tensor_error("data", "nests arrays in rows: a row is an array of numbers")
    if row >= n:
        return _count(n * width + 1, n, width, "at least ")
    return _not_a_number(row, column, json_type(stand_in(text[at : at + 1])), m)


def _not_a_number(row: int, column: int, kind: str, m: Model) -> BadRequest:
    name = m.features[column]
    return BadRequest(
        f"row {row}: {name} is not a number",
        [{"row": row, "field": name, "problem": f"{kind} is not a number"}],
    )


def _ragged(row: int, values: int, m: Model, least: str = "") -> BadRequest:
    width = len(m.features)
    return _tensor_error(
        "data", f"row {row} holds {least}{values} values; the {m.role} model takes {width}"
    )


def _count(values: int, n: int, width: int, least: str = "") -> BadRequest:
    return _tensor_error(
        "data", f"holds {least}{values} values; shape [{n}, {width}] needs {n * width}"
    )
