"""Feature rows to send the predict function: next month's, copies around it, the old ones."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from milkprice import contract
from milkprice.settings import Settings
from tests.support.paths import LEGACY_X


def legacy_rows() -> list[dict[str, Any]]:
    """The old system's training rows (141 legacy features each); skips without the real data."""
    if not LEGACY_X.is_file():
        pytest.skip(f"the legacy features are not at {LEGACY_X}")
    with LEGACY_X.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def next_row(doc: dict[str, Any]) -> dict[str, float]:
    """Next month's feature row, from a manifest."""
    return dict(doc["next"]["features"])


def served_row(settings: Settings) -> tuple[list[str], dict[str, float]]:
    """The served forecast model's features, in order, and next month's row of just those."""
    found = contract.serving(settings)
    assert found is not None, f"no model is served from {settings.bucket}"
    manifest = found[1]
    features = list(manifest.models["forecast"].features)
    return features, {name: float(manifest.next.features[name]) for name in features}


def perturbed(row: dict[str, float], n: int, seed: int = 0) -> list[dict[str, float]]:
    """``n`` plausible rows around one: every value but the month dummies moved by ~5 %."""
    rng = np.random.default_rng(seed)
    return [
        {
            k: v if k.startswith("mes_") else v * (1 + 0.05 * rng.standard_normal())
            for k, v in row.items()
        }
        for _ in range(n)
    ]


@dataclass
class Sample:
    """The serving models' feature names, in column order, and next month's row."""

    forecast: list[str]
    legacy: list[str]
    row: dict[str, float]

    def tensor(self, **changes: Any) -> dict[str, Any]:
        """A V2 infer body of the row, its one input changed by ``changes``."""
        tensor = {
            "name": "X",
            "shape": [1, len(self.forecast)],
            "datatype": "FP64",
            "data": [self.row[f] for f in self.forecast],
        }
        return {"inputs": [{**tensor, **changes}]}

    def rows(self, n: int) -> list[dict[str, float]]:
        return [dict(self.row) for _ in range(n)]
