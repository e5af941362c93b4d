"""One served model: its ONNX graph in an onnxruntime session, and the prices of a matrix.

A :class:`Model` is built once per load (``snapshot``) and never changed; what scoring needs
(the feature order, a feature's column, a row's values in that order) is computed then.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from milkprice import tracing
from milkprice.contract import ModelEntry
from milkprice.errors import BadRequest
from milkprice.predict import metrics


@dataclass(frozen=True, eq=False)
class Model:
    """One ONNX graph with what scoring rows for it needs, precomputed once per load."""

    role: str
    entry: ModelEntry  # the model's manifest entry
    features: tuple[str, ...]  # in the graph's column order
    feature_set: frozenset[str]
    columns: Mapping[str, int]  # feature name -> column
    take: Callable[[dict[str, Any]], tuple[Any, ...]]  # a row's values in column order
    session: Any  # onnxruntime.InferenceSession
    input: str
    output: str
    options: Any = None  # onnxruntime.RunOptions, shared by every run (``run_options``)

    def run(self, X: np.ndarray) -> np.ndarray:
        return np.ravel(self.session.run([self.output], {self.input: X}, self.options)[0])

    def score(self, X: np.ndarray, positions: list[int] | None) -> np.ndarray:
        """Prices of finite rows; 400 names a row with a value, or a price, that is not finite.

        ``positions`` are the rows' places in the request when ``X`` holds only some of them.
        """
        check_finite(X, self.features, positions)
        with tracing.span("score", **{"milkprice.model": self.role, "milkprice.rows": len(X)}):
            prices = self.run(X)
        if not all_finite(prices):
            r = int(np.argmin(np.isfinite(prices)))
            row = positions[r] if positions is not None else r
            raise BadRequest(
                f"row {row}: the {self.role} model gives no finite price for these values",
                [{"row": row, "problem": "values out of the model's range: no finite price"}],
            )
        metrics.scored(self.role, len(prices))
        return prices


# Arrays of at most this many values are checked value by value in Python: beside an ONNX
# run, a numpy reduction of a few values costs more than the run's own share (measured on a
# 1-row request: 2 us alone, 6 us before a run)
FEW = 64


def all_finite(a: np.ndarray) -> bool:
    """Whether every value of ``a`` is finite."""
    if a.size <= FEW:
        return all(map(math.isfinite, a.ravel().tolist()))
    # one reduction: a finite sum says every value is; an infinite one may be an overflow
    with np.errstate(over="ignore"):  # which is no one's warning
        total = a.sum()
    return math.isfinite(total) or bool(np.isfinite(a).all())


def check_finite(X: np.ndarray, features: tuple[str, ...], positions: list[int] | None) -> None:
    if all_finite(X):
        return
    finite = np.isfinite(X)
    r, c = (int(i) for i in np.argwhere(~finite)[0])
    row = positions[r] if positions is not None else r
    raise BadRequest(
        f"row {row}: {features[c]} is not a finite number",
        [{"row": row, "field": features[c], "problem": "not a finite number"}],
    )


def taker(features: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's values of ``features``, in that order (a KeyError if the row lacks one)."""
    if len(features) == 1:
        name = features[0]
        return lambda row: (row[name],)
    return itemgetter(*features)


def run_options() -> Any:
    """The options of a session's runs, built once: without them each run builds its own
    default ones (2 of the 15 us of a 1-row run, measured). Runs only read them."""
    import onnxruntime as ort  # in the serving process, as in ``session``

    return ort.RunOptions()


def session(data: bytes) -> Any:
    """An onnxruntime session of an ONNX graph's bytes: one thread, sequential, CPU."""
    # Imported here, in the serving process: functions-framework imports the predict modules in
    # the gunicorn master before forking, and onnxruntime's global state inherited across a fork
    # aborts the worker when it exits ("std::system_error: Invalid argument").
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
