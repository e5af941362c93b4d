"""The KServe V2 (Open Inference Protocol) answers: server and model metadata, readiness, infer.

Each takes the snapshot to answer from; the models are ``forecast`` and ``legacy``, with
``milk-price`` another name of ``forecast``. An inference request is one tensor ``[N, F]``
whose columns are the model's features in the manifest's order.
"""

from __future__ import annotations

from itertools import chain
from types import MappingProxyType
from typing import Any

import numpy as np

from milkprice import __version__
from milkprice.errors import BadRequest, NotFound, PayloadTooLarge
from milkprice.predict.model import Model
from milkprice.predict.snapshot import Loaded
from milkprice.predict.validation import NUMBER, json_type

ALIASES = MappingProxyType({"forecast": "forecast", "legacy": "legacy", "milk-price": "forecast"})
SERVER_NAME = "milk-price"
PLATFORM = "onnxruntime_onnx"
V2_TYPES = MappingProxyType({"FP64": np.float64, "FP32": np.float32})


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": []}


def model(loaded: Loaded, name: str) -> Model:
    role = ALIASES.get(name)
    if role is None:
        raise NotFound(
            f"no model named {name!r}; the models are {', '.join(ALIASES)}",
            [{"field": "name", "problem": "unknown model"}],
        )
    return loaded.models[role]


def ready(loaded: Loaded, name: str | None) -> dict[str, Any]:
    """Server readiness (``loaded`` is there), or a model's; 404 for an unknown model."""
    if name is None:
        return {"ready": True}
    model(loaded, name)
    return {"name": name, "ready": True}


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


def infer(loaded: Loaded, name: str, doc: Any, max_rows: int) -> dict[str, Any]:
    """A V2 inference request: one tensor [N, F], columns in the manifest's feature order."""
    m = model(loaded, name)
    tensor = _tensor(doc)
    n, dtype = _shape_and_type(tensor, m, max_rows)
    X = _matrix(tensor.get("data"), m, n)
    if dtype is np.float32:
        with np.errstate(over="ignore"):
            X = X.astype(np.float32).astype(np.float64)
    prices = m.score(X, None)
    answer: dict[str, Any] = {"model_name": name, "model_version": loaded.version}
    if doc.get("id") is not None:
        answer["id"] = str(doc["id"])
    answer["outputs"] = [{"name": m.output, "shape": [n, 1], "datatype": "FP64", "data": prices}]
    return answer


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


def _matrix(data: Any, m: Model, n: int) -> np.ndarray:
    """The tensor's data, flat or nested by row, as an ``[n, F]`` float64 matrix."""
    width = len(m.features)
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
        name = m.features[column]
        raise BadRequest(
            f"row {row}: {name} is not a number",
            [{"row": row, "field": name, "problem": f"{json_type(data[k])} is not a number"}],
        )
    return np.fromiter(data, dtype=np.float64, count=n * width).reshape(n, width)
