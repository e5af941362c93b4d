"""The prices a stored version's models give rows: what the function must answer."""

from __future__ import annotations

from typing import Any

import numpy as np

from milkprice.settings import Settings
from milkprice.train import artifacts
from tests.support.buckets import artifact


def _matrix(entry: dict[str, Any], rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[row[f] for f in entry["features"]] for row in rows], dtype=np.float64)


def onnx_prices(
    settings: Settings, doc: dict[str, Any], role: str, rows: list[dict[str, Any]]
) -> np.ndarray:
    """The ONNX graph of ``role`` in the version ``doc`` describes, on ``rows``."""
    entry = doc["models"][role]
    return artifacts.onnx_predict(
        artifact(settings, doc["version"], entry["onnx"]), _matrix(entry, rows)
    )


def skops_prices(
    settings: Settings, doc: dict[str, Any], role: str, rows: list[dict[str, Any]]
) -> np.ndarray:
    """The fitted scikit-learn pipeline of ``role`` (its skops file), on ``rows``."""
    entry = doc["models"][role]
    pipeline = artifacts.from_skops(artifact(settings, doc["version"], entry["skops"]))
    return np.ravel(pipeline.predict(_matrix(entry, rows)))
