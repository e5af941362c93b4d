"""The V2 protocol's binary tensor data extension, as Triton defines it.

A request may carry a tensor's values as raw little-endian bytes after its JSON: the header
``Inference-Header-Content-Length`` gives the JSON's length, the input says how many bytes are
its own in ``parameters.binary_data_size``. An output asked for with ``parameters.binary_data``
(or every output, with the request's ``parameters.binary_data_output``) comes back the same way:
its JSON gives ``binary_data_size`` instead of ``data``, and the answer's header gives the JSON's
length. Every length is checked against the bytes, the shape and the type.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from milkprice.errors import BadRequest
from milkprice.predict import bodies, rows

HEADER = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"
MEDIA = "application/octet-stream"
REQUEST = ("id", "inputs", "outputs", "parameters")  # the members an inference request uses
TENSOR = ("name", "shape", "datatype", "parameters", "data")
_ONE = msgspec.json.Decoder(tuple[msgspec.Raw])  # an array of exactly one value, as its text


def _error(field: str, problem: str) -> BadRequest:
    return BadRequest(f"{field}: {problem}", [{"field": field, "problem": problem}])


def split(body: bytes, header: str | None) -> tuple[Any, memoryview]:
    """The request's JSON document (see ``request``) and the bytes after it (none without
    the header)."""
    if header is None:
        try:
            return request(body), memoryview(b"")
        except BadRequest as exc:
            if exc.message.startswith("the body is not valid JSON"):
                exc.message += f" (JSON followed by binary tensor data needs the {HEADER} header)"
            raise
    text = header.strip()
    if not text.isascii() or not text.isdigit():
        raise _error(HEADER, f"must be a byte count, not {_shown(header)}")
    digits = text.lstrip("0") or "0"
    # compared as text first: int() refuses more than 4300 digits, and needs none of them
    if len(digits) > len(str(len(body))) or int(digits) > len(body):
        raise _error(HEADER, f"says {_shown(text)} bytes of JSON; the body has only {len(body)}")
    length = int(digits)
    view = memoryview(body)
    return request(view[:length]), view[length:]


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text)} characters)"


def request(json: bytes | memoryview) -> Any:
    """An inference request as ``parse_json`` would give it, read in memory its size pays for:
    the tensor's data left as its JSON text (``v2`` reads it knowing the shape), no other
    member parsed above ``bodies.MEMBER_BYTES``, nothing built for members it does not use."""
    doc = bodies.members(json, REQUEST, text=("inputs",))
    if type(doc) is dict and "inputs" in doc:
        try:
            (tensor,) = rows.decode_json(_ONE, doc["inputs"])
        except msgspec.ValidationError:
            doc["inputs"] = bodies.stand_in(doc["inputs"])  # no array of one: the checks say so
        else:
            doc["inputs"] = [bodies.members(tensor, TENSOR, "inputs[0].", text=("data",))]
    return doc


def matrix(
    tensor: dict[str, Any], tail: memoryview, n: int, width: int, dtype: Any
) -> np.ndarray | None:
    """The input's ``[n, width]`` float64 matrix from the bytes after the JSON, or None when
    its values are in its JSON ``data`` (then no bytes may follow the JSON)."""
    size = _declared_size(tensor)
    if size is None:
        if len(tail):
            raise _error(
                "inputs[0].parameters.binary_data_size",
                f"missing, yet {len(tail)} bytes follow the JSON header",
            )
        return None
    itemsize = np.dtype(dtype).itemsize
    if size != n * width * itemsize:
        raise _error(
            "inputs[0].parameters.binary_data_size",
            f"{size} bytes; shape [{n}, {width}] of {itemsize}-byte values needs "
            f"{n * width * itemsize}",
        )
    if len(tail) != size:
        short = "only " if len(tail) < size else ""
        raise _error(
            "inputs[0].parameters.binary_data_size",
            f"{size} bytes, but {short}{len(tail)} bytes follow the JSON header "
            f"(its length goes in {HEADER})",
        )
    values = np.frombuffer(tail, dtype=np.dtype(dtype).newbyteorder("<"), count=n * width)
    return values.reshape(n, width).astype(np.float64)


def _declared_size(tensor: dict[str, Any]) -> int | None:
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if type(parameters) is not dict:
        raise _error("inputs[0].parameters", "must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise _error("inputs[0].parameters.binary_data_size", "must be a byte count")
    if "data" in tensor:
        raise _error("inputs[0].data", "must be left out when binary_data_size is given")
    return size


def wants_binary(doc: dict[str, Any], output: str) -> bool:
    """Whether the request asks for ``output`` (the one output) as binary data."""
    parameters = doc.get("parameters")
    if parameters is not None and type(parameters) is not dict:
        raise _error("parameters", "must be an object")
    default = (parameters or {}).get("binary_data_output", False)
    if type(default) is not bool:
        raise _error("parameters.binary_data_output", "must be true or false")
    outputs = doc.get("outputs")
    if outputs is None or outputs == []:
        return default
    if type(outputs) is not list or not all(type(o) is dict for o in outputs):
        raise _error("outputs", "must be an array of objects")
    binary: Any = default
    for k, requested in enumerate(outputs):
        if requested.get("name") != output:
            raise _error(f"outputs[{k}].name", f"the only output is {output!r}")
        asked = requested.get("parameters") or {}
        binary = asked.get("binary_data", default) if type(asked) is dict else None
        if type(binary) is not bool:
            raise _error(f"outputs[{k}].parameters.binary_data", "must be true or false")
    return bool(binary)


def output(values: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """An FP64 output's JSON parameters and its bytes, little-endian."""
    data = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return {"binary_data_size": len(data)}, data
