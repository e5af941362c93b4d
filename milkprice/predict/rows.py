"""The fast path of ``/predict``: a body decoded straight into one float matrix.

A generic JSON parser builds a Python dict per row and an object per value; 1000 rows in the
old 141-feature format are most of a request's time that way. Here msgspec decodes
``{"data": [row, ...]}`` into structs that hold only the served models' features (other keys
are skipped), and the structs become one float64 matrix, a column per feature, NaN where a
row lacks it.

Anything this path cannot take as it is (invalid JSON, a value that is not a number, a row
without every feature of either model, too many rows) gives None: the full checks in
``validation`` then answer, with their errors naming the row and field.
"""

from __future__ import annotations

from itertools import chain

import msgspec
import numpy as np

Decoder = msgspec.json.Decoder


def decoder(features: tuple[str, ...]) -> Decoder:
    """A decoder of ``{"data": [row, ...]}`` keeping only ``features``, in that order."""
    # Fields are named f0, f1, ... and renamed to the features: any feature name works.
    names = [f"f{i}" for i in range(len(features))]
    row = msgspec.defstruct(
        "Row",
        [(name, float, float("nan")) for name in names],
        rename=dict(zip(names, features, strict=True)),
        gc=False,  # rows hold only floats: nothing for the cycle collector to track
    )
    body = msgspec.defstruct("Body", [("data", list[row])])  # type: ignore[valid-type]
    return Decoder(body)


def matrix(decode: Decoder, body: bytes, max_rows: int) -> np.ndarray | None:
    """The rows as a ``[rows, features]`` float64 matrix, or None (see the module's text)."""
    try:
        rows = decode.decode(body).data
    except (msgspec.MsgspecError, RecursionError):  # RecursionError: nesting too deep
        return None
    if not rows or len(rows) > max_rows:
        return None
    width = len(rows[0].__struct_fields__)
    values = chain.from_iterable(map(msgspec.structs.astuple, rows))
    return np.fromiter(values, dtype=np.float64, count=len(rows) * width).reshape(-1, width)
