"""/predict rows: which model scores each, their values as a matrix, and the errors.

Every refusal names the row and, where there is one, the field. Large bodies try the fast path
first (``rows``), which refuses whatever needs an error message: the full checks here answer
those. ``json_type`` and ``NUMBER`` name JSON values for the V2 checks too.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any

import numpy as np

from milkprice.errors import BadRequest, PayloadTooLarge
from milkprice.predict import rows
from milkprice.predict.model import Model
from milkprice.predict.snapshot import Loaded

NUMBER = frozenset({int, float})  # what orjson gives for JSON numbers; bool is not one
MAX_DETAILS = 50
# /predict bodies from this size on take the fast path (rows.py); a few rows parse faster the
# plain way (measured: 1 row 11 us plain, 21 us fast; 1000 old-format rows 24 ms, 11 ms)
FAST_PATH_BYTES = 32_768


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
    data = _data(doc, max_rows)
    forecast, legacy = loaded.models["forecast"], loaded.models["legacy"]
    new, old = _choose(data, forecast, legacy)
    if not old:
        return forecast.score(row_matrix(forecast, data, None), None), "forecast"
    if not new:
        return legacy.score(row_matrix(legacy, data, None), None), "legacy"
    prices = np.empty(len(data), dtype=np.float64)
    for m, positions in ((forecast, new), (legacy, old)):
        chosen = [data[i] for i in positions]
        prices[positions] = m.score(row_matrix(m, chosen, positions), positions)
    return prices, "forecast,legacy"


def _data(doc: Any, max_rows: int) -> list[Any]:
    """The rows of ``{"data": [row, ...]}``: 400 unless a non-empty array, 413 if too many."""
    if type(doc) is not dict:
        raise BadRequest(
            'the body must be an object {"data": [row, ...]}',
            [{"field": "data", "problem": f"the body is {json_type(doc)}, not an object"}],
        )
    data = doc.get("data")
    if type(data) is not list:
        problem = "missing" if "data" not in doc else f"{json_type(data)}, not an array"
        raise BadRequest("data must be an array of rows", [{"field": "data", "problem": problem}])
    if not data:
        raise BadRequest("data is empty", [{"field": "data", "problem": "no rows"}])
    if len(data) > max_rows:
        raise PayloadTooLarge(
            f"{len(data)} rows; at most {max_rows} are accepted per request",
            [{"field": "data", "problem": f"more than {max_rows} rows"}],
        )
    return data


def _choose(data: list[Any], forecast: Model, legacy: Model) -> tuple[list[int], list[int]]:
    """The places of the rows each model scores: (forecast's, legacy's)."""
    fset, lset = forecast.feature_set, legacy.feature_set
    old: list[int] = []
    new: list[int] = []
    for i, row in enumerate(data):
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
            raise missing(i, row, (forecast, legacy))
    return new, old


def missing(i: int, row: dict[str, Any], models: Iterable[Model]) -> BadRequest:
    """The error for a row no model can score: it names what the nearest model lacks.

    Nearest is the model whose features the row has the largest share of, so an old client's
    row missing one of the legacy model's 141 features hears about that one, not about the
    forecast model's few features it never meant to send.
    """
    nearest = max(models, key=lambda m: len(m.feature_set & row.keys()) / len(m.feature_set))
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
