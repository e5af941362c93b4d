"""Large ``/predict`` bodies: decoded by type into float matrices, in memory the body pays for.

A generic JSON parser builds a Python object per value: 1000 rows in the old 141-feature format
are most of a request's time that way, and an empty row ``{}``, 3 bytes, costs a 64-byte dict.
Here msgspec decodes ``{"data": [row, ...]}`` into structs holding only the served models'
features (other keys are skipped, NaN where a row lacks one), and the structs become float64
matrices, a column per feature, a chunk of consecutive rows at a time.

A struct costs 8 bytes per feature whatever its row holds, so nothing is decoded whole unless
the body pays for it. Every row struct counts itself as it is built (``__post_init__``), and
the decoding stops past a limit, having built no more than the limit:

1. The whole body at once, while the structs take no more memory than the body itself (rows
   with every feature of the legacy model, the old clients' rows, are larger than a struct).
2. Else an exact count first, into empty structs (16 bytes a row): more than ``max_rows``
   rows answer 413 having built at most ``max_rows`` of them, however many the body holds.
   Then the rows as their JSON text (``msgspec.Raw``, no copy), decoded ``CHUNK`` at a time.

Every refusal names the row and field; the errors of the body's shape (not an object, no
``data`` array, a row that is not an object, too many rows) are worded here for the small
bodies' checks (``validation``) too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec
import numpy as np

from milkprice.errors import BadRequest, MilkPriceError, PayloadTooLarge

CHUNK = 512  # rows decoded at once when the body is not decoded whole
STRUCT_BYTES = 16  # a struct's header, gc=False; each field adds a pointer

# [rows built so far, the most allowed] for the decoding under way in this thread, if any
_SEEN: ContextVar[list[int] | None] = ContextVar("milkprice_rows", default=None)


def _count(_: Any) -> None:
    """``__post_init__`` of a row struct: count it, and stop the decoding past the limit."""
    seen = _SEEN.get()
    if seen is not None:
        seen[0] += 1
        if seen[0] > seen[1]:
            raise ValueError("past the limit")


_Empty = msgspec.defstruct("Empty", [], gc=False, namespace={"__post_init__": _count})
COUNTER = msgspec.json.Decoder(msgspec.defstruct("Rows", [("data", list[_Empty])]))  # type: ignore[valid-type]
TEXTS = msgspec.json.Decoder(msgspec.defstruct("Texts", [("data", list[msgspec.Raw])]))
SYNTAX = msgspec.json.Decoder(msgspec.Raw)  # checks a document, building nothing


@dataclass(frozen=True, eq=False)
class Decoder:
    """The decoders of one version's rows: built once per load."""

    features: tuple[str, ...]  # the columns: both models' features
    whole: msgspec.json.Decoder  # {"data": [row, ...]}
    chunk: msgspec.json.Decoder  # [row, ...]


def decoder(features: tuple[str, ...]) -> Decoder:
    """The decoders of rows keeping only ``features``, in that order."""
    # Fields are named f0, f1, ... and renamed to the features: any feature name works.
    names = [f"f{i}" for i in range(len(features))]
    row = msgspec.defstruct(
        "Row",
        [(name, float, float("nan")) for name in names],
        rename=dict(zip(names, features, strict=True)),
        gc=False,  # rows hold only floats: nothing for the cycle collector to track
        namespace={"__post_init__": _count},
    )
    body = msgspec.defstruct("Body", [("data", list[row])])  # type: ignore[valid-type]
    rows = list[row]  # type: ignore[valid-type]
    return Decoder(features, msgspec.json.Decoder(body), msgspec.json.Decoder(rows))


def chunks(decode: Decoder, body: bytes, max_rows: int) -> Iterator[np.ndarray]:
    """The rows as ``[rows, features]`` float64 matrices of consecutive rows, in order, NaN
    where a row lacks a feature; 400 or 413 for a body of another shape or too many rows."""
    width = len(decode.features)
    row_bytes = STRUCT_BYTES + 8 * width
    fits = min(max_rows, max(CHUNK, len(body) // row_bytes))
    try:
        rows = _decoded(decode.whole, body, fits).data
    except _PastLimit:
        if fits == max_rows:
            raise too_many(None, max_rows) from None
    else:
        if not rows:
            raise empty()
        yield _matrix(rows, width)
        return
    count(body, max_rows)
    texts = _decoded(TEXTS, body, max_rows).data
    for start in range(0, len(texts), CHUNK):
        joined = b"[" + b",".join(texts[start : start + CHUNK]) + b"]"
        yield _matrix(_decoded(decode.chunk, joined, CHUNK, start), width)


def count(body: bytes, max_rows: int) -> int:
    """The rows of ``{"data": [object, ...]}``, building no more than ``max_rows`` of anything;
    400 for a body of another shape, 413 for more rows."""
    try:
        rows = _decoded(COUNTER, body, max_rows).data
    except _PastLimit:
        raise too_many(None, max_rows) from None
    if not rows:
        raise empty()
    return len(rows)


def _matrix(rows: list[Any], width: int) -> np.ndarray:
    values = chain.from_iterable(map(msgspec.structs.astuple, rows))
    return np.fromiter(values, dtype=np.float64, count=len(rows) * width).reshape(-1, width)


class _PastLimit(Exception):
    """The decoding built as many rows as it was allowed to and stopped."""


def _decoded(decode: msgspec.json.Decoder, body: bytes, limit: int, offset: int = 0) -> Any:
    """``decode.decode(body)``, stopped past ``limit`` rows; errors name rows from ``offset``."""
    seen = [0, limit]
    token = _SEEN.set(seen)
    try:
        return decode_json(decode, body)
    except msgspec.ValidationError as exc:
        if seen[0] > limit:
            raise _PastLimit() from None
        # msgspec stops at the first value of the wrong type, before reading the rest: a body
        # that is no JSON at all is named so first, as the full checks name it
        decode_json(SYNTAX, body)
        raise refusal(str(exc), offset) from None
    finally:
        _SEEN.reset(token)


def decode_json(decode: msgspec.json.Decoder, body: bytes | memoryview) -> Any:
    """``decode.decode(body)``; 400 if ``body`` is no JSON (msgspec's ValidationError, for JSON
    of another shape, is left to the caller to word)."""
    try:
        return decode.decode(body)
    except msgspec.ValidationError:
        raise  # valid JSON, of another shape: a DecodeError too, for msgspec
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the body is not valid JSON here: it nests too deeply") from None


# ---------------------------------------------------------------- the errors


JSON_TYPES = {
    "object": "an object",
    "array": "an array",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
}
_WHERE = re.compile(r"(?P<what>.*?)(?: - at `\$(?P<path>.*)`)?", re.DOTALL)
_ROW = re.compile(r"(?:\.data)?\[(?P<row>\d+)\](?:\.(?P<field>.*))?", re.DOTALL)
_GOT = re.compile(r"got `(\w+)`")


def refusal(message: str, offset: int = 0) -> MilkPriceError:
    """The answer to msgspec's ValidationError ``message``, worded as the full checks word it."""
    found = _WHERE.fullmatch(message)
    what, path = (found["what"], found["path"]) if found else (message, None)
    got = _GOT.search(what)
    kind = JSON_TYPES.get(got[1], got[1]) if got else "another value"
    if path is None:
        return missing_data() if "`data`" in what else not_an_object(kind)
    if path == ".data":
        return not_an_array(kind)
    place = _ROW.fullmatch(path)
    if place is None:
        return BadRequest(f"the body is not valid here: {what} at {path}")
    row = int(place["row"]) + offset
    if place["field"] is None:
        return row_not_an_object(row, kind)
    field = place["field"]
    problem = f"{kind} is not a number" if got else "beyond the range of a double"
    return BadRequest(
        f"row {row}: not a number: {field}", [{"row": row, "field": field, "problem": problem}]
    )


def not_an_object(kind: str) -> BadRequest:
    return BadRequest(
        'the body must be an object {"data": [row, ...]}',
        [{"field": "data", "problem": f"the body is {kind}, not an object"}],
    )


def missing_data() -> BadRequest:
    return BadRequest("data must be an array of rows", [{"field": "data", "problem": "missing"}])


def not_an_array(kind: str) -> BadRequest:
    return BadRequest(
        "data must be an array of rows", [{"field": "data", "problem": f"{kind}, not an array"}]
    )


def empty() -> BadRequest:
    return BadRequest("data is empty", [{"field": "data", "problem": "no rows"}])


def too_many(rows: int | None, max_rows: int) -> PayloadTooLarge:
    found = f"{rows} rows" if rows is not None else f"more than {max_rows} rows"
    return PayloadTooLarge(
        f"{found}; at most {max_rows} rows are accepted per request",
        [{"field": "data", "problem": f"more than {max_rows} rows"}],
    )


def row_not_an_object(row: int, kind: str) -> BadRequest:
    return BadRequest(
        f"row {row} is not an object", [{"row": row, "problem": f"{kind}, not an object"}]
    )
