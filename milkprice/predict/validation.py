"""/predict rows: which model scores each, their values as a matrix, and the errors.

Every refusal names the row and, where there is one, the field. Small bodies are parsed whole
(orjson) and checked here; large ones are decoded by type (``rows``), so that no body costs
more than a small multiple of its size, and refused at their first row no model can score.
``json_type`` and ``NUMBER`` name JSON values for the V2 checks too.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from itertools import chain
from typing import Any

import numpy as np

from milkprice import tracing
from milkprice.errors import BadRequest
from milkprice.predict import rows
from milkprice.predict.bodies import parse_json
from milkprice.predict.model import Model
from milkprice.predict.snapshot import Loaded

NUMBER = frozenset({int, float})  # what orjson gives for JSON numbers; bool is not one
MAX_DETAILS = 50
# /predict bodies from this size on are decoded by type (rows.py): a few rows parse faster the
# plain way (measured: 1 row 11 us plain, 21 us typed; 1000 old-format rows 24 ms, 11 ms), and
# a plain parse of a body this small costs at most a few hundred KB, whatever it holds
FAST_PATH_BYTES = 32_768
FEW_ROWS = 16  # row_matrix: up to this many rows, numpy takes them as they are


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


Taken = dict[str, list[tuple[np.ndarray, np.ndarray]]]  # role -> (rows' places, matrix) parts


def fast_scores(loaded: Loaded, body: bytes, max_rows: int) -> tuple[np.ndarray, str]:
    """``score_rows`` for a large body, decoded by type (``rows``) a chunk of rows at a time,
    each row kept only in the matrix of the model that scores it."""
    taken: Taken = {"forecast": [], "legacy": []}
    start = 0
    with tracing.span("validate"):
        for X in rows.chunks(loaded.decoder, body, max_rows):
            _take(loaded, X, start, taken)
            start += len(X)
    prices = np.empty(start, dtype=np.float64)
    used = [role for role in ("forecast", "legacy") if taken[role]]
    for role in used:
        parts = taken[role]
        where, sub = parts[0] if len(parts) == 1 else map(np.concatenate, zip(*parts, strict=True))
        positions = None if len(used) == 1 else where.tolist()
        prices[where] = loaded.models[role].score(sub, positions)
    return prices, ",".join(used)


def _take(loaded: Loaded, X: np.ndarray, start: int, taken: Taken) -> None:
    """Split the rows ``X`` (from row ``start`` on) by the model that scores each, into
    ``taken``; 400 naming the first row neither can score."""
    present = ~np.isnan(X)
    new = present[:, loaded.columns["forecast"]].all(axis=1)
    old = ~new & present[:, loaded.columns["legacy"]].all(axis=1)
    scored = new | old
    if not scored.all():
        r = int(np.argmin(scored))
        names = {loaded.decoder.features[c] for c in np.flatnonzero(present[r])}
        raise missing(start + r, names, loaded.models.values())
    for role, chosen in (("forecast", new), ("legacy", old)):
        if chosen.all():  # the usual case: one model for every row, nothing to pick
            taken[role].append((np.arange(start, start + len(X)), X[:, loaded.columns[role]]))
        elif chosen.any():
            sub = X[np.ix_(chosen, loaded.columns[role])]
            taken[role].append((np.flatnonzero(chosen) + start, sub))


def score_rows(loaded: Loaded, doc: Any, max_rows: int) -> tuple[np.ndarray, str]:
    """Prices of ``{"data": [row, ...]}`` in row order, and which models scored them.

    A row carrying every feature of the forecast model is scored by it, else a row carrying
    every feature of the legacy model by that one; other keys are ignored.
    """
    with tracing.span("validate"):
        data = _data(doc, max_rows)
        forecast, legacy = loaded.models["forecast"], loaded.models["legacy"]
        new, old = _choose(data, forecast, legacy)
        if not old or not new:
            m = forecast if not old else legacy
            X = row_matrix(m, data, None)
        else:
            parts = [
                (m, p, row_matrix(m, [data[i] for i in p], p))
                for m, p in ((forecast, new), (legacy, old))
            ]
    if not old or not new:
        return m.score(X, None), m.role
    prices = np.empty(len(data), dtype=np.float64)
    for m, positions, X in parts:
        prices[positions] = m.score(X, positions)
    return prices, "forecast,legacy"


def _data(doc: Any, max_rows: int) -> list[Any]:
    """The rows of ``{"data": [row, ...]}``: 400 unless a non-empty array, 413 if too many."""
    if type(doc) is not dict:
        raise rows.not_an_object(json_type(doc))
    data = doc.get("data")
    if type(data) is not list:
        raise rows.not_an_array(json_type(data)) if "data" in doc else rows.missing_data()
    if not data:
        raise rows.empty()
    if len(data) > max_rows:
        raise rows.too_many(len(data), max_rows)
    return data


def check_body(body: bytes, max_rows: int) -> None:
    """400 or 413 for a /predict body of the wrong shape, whatever model serves."""
    if len(body) >= FAST_PATH_BYTES:
        rows.count(body, max_rows)
    else:
        _data(parse_json(body), max_rows)


def _choose(data: list[Any], forecast: Model, legacy: Model) -> tuple[list[int], list[int]]:
    """The places of the rows each model scores: (forecast's, legacy's)."""
    fset, lset = forecast.feature_set, legacy.feature_set
    old: list[int] = []
    new: list[int] = []
    for i, row in enumerate(data):
        if type(row) is not dict:
            raise rows.row_not_an_object(i, json_type(row))
        keys = row.keys()
        if keys >= fset:
            new.append(i)
        elif keys >= lset:
            old.append(i)
        else:
            raise missing(i, keys, (forecast, legacy))
    return new, old


def missing(i: int, row: AbstractSet[str], models: Iterable[Model]) -> BadRequest:
    """The error for a row no model can score: it names what the nearest model lacks.

    ``row`` holds the row's keys (or those of them that are features).

    Nearest is the model whose features the row has the largest share of, so an old client's
    row missing one of the legacy model's 141 features hears about that one, not about the
    forecast model's few features it never meant to send.
    """
    nearest = max(models, key=lambda m: len(m.feature_set & row) / len(m.feature_set))
    lacking = [name for name in nearest.features if name not in row]
    shown = ", ".join(lacking[:5]) + (", ..." if len(lacking) > 5 else "")
    return BadRequest(
        f"row {i} has neither every feature of the forecast model nor every feature of the "
        f"legacy model; nearest is the {nearest.role} model, which also needs {len(lacking)}: "
        f"{shown}",
        [
            {"row": i, "field": name, "problem": f"missing (the {nearest.role} model needs it)"}
            for name in lacking
        ],
    )


def row_matrix(model: Model, data: list[dict[str, Any]], positions: list[int] | None) -> np.ndarray:
    """The float64 matrix of rows that carry every feature of ``model``; 400 names a row and
    field that is not a number (``Model.score`` checks that numbers are finite)."""
    values = list(map(model.take, data))
    if not set(map(type, chain.from_iterable(values))) <= NUMBER:
        raise _not_numbers(model, values, positions)
    if len(values) <= FEW_ROWS:  # a few rows build faster as they are (1 row: 1 us, not 2)
        return np.array(values, dtype=np.float64)
    width = len(model.features)
    return np.fromiter(
        chain.from_iterable(values), dtype=np.float64, count=len(values) * width
    ).reshape(len(values), width)


def _not_numbers(
    model: Model, values: list[tuple[Any, ...]], positions: list[int] | None
) -> BadRequest:
    for r, row_values in enumerate(values):
        bad = [
            (name, value)
            for name, value in zip(model.features, row_values, strict=True)
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
