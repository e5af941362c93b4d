"""make evaluate's horizon table: the path beside each anchor, and a plain error without the
anchors' own environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milkprice.errors import MilkPriceError
from milkprice.local import anchors, evaluation
from tests.support.paths import ROOT


def figures(rmse: list[float], coverage: list[float] | None = None) -> dict[str, Any]:
    def one(h: int, value: float) -> dict[str, Any]:
        own = {"rmse": value, "mae": 0.0, "mape": 0.0, "rmse_to_naive": value / 10}
        band = {"coverage_band": [16 / 24, 22 / 24]} if coverage else {}
        return {
            "horizon": h,
            "scored": 24,
            "path": {**own, "coverage": coverage[h - 1] if coverage else 0.8, **band},
            "naive": {**own, "rmse": 10.0},
            "models": {},
        }

    return {
        "months": ["2018-05", "2020-04"],
        "horizons": [one(h, v) for h, v in enumerate(rmse, 1)],
    }


def test_the_table_says_where_the_path_is_beaten() -> None:
    path = {"short": figures([5.0, 7.0])}
    text = evaluation.horizon_text(path, {"short": {"mstl": [6.0, 6.5], "ces": [8.0, 9.0]}})
    lines = text.splitlines()
    assert "2018-05..2020-04 (24 months each)" in lines[0]
    assert lines[3].split() == [
        *("1", "5.00", "10.00", "0.50", "80%", "-", "-"),
        *("6.00", "8.00", "6.00", "yes"),
    ]
    assert lines[4].split() == [
        *("2", "7.00", "10.00", "0.70", "80%", "-", "-"),
        *("6.50", "9.00", "6.50", "NO"),
    ]


def test_the_table_puts_the_band_chance_allows_beside_each_coverage() -> None:
    # 16 and 22 of 24 months are the band's bounds, both inside; 15 and 23 are outside
    coverage = [15 / 24, 16 / 24, 22 / 24, 23 / 24]
    text = evaluation.horizon_text({"short": figures([5.0] * 4, coverage)}, None)
    rows = [line.split() for line in text.splitlines()[3:7]]
    assert [r[4:7] for r in rows] == [
        ["62%", "67%-92%", "NO"],
        ["67%", "67%-92%", "yes"],
        ["92%", "67%-92%", "yes"],
        ["96%", "67%-92%", "NO"],
    ]


def test_without_the_evaluation_environment_the_error_says_how_to_get_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(MilkPriceError, match="make evaluate creates it"):
        anchors.run([1.0] * 40, [30], 3, False, tmp_path)


@pytest.mark.skipif(
    not (ROOT / anchors.EVAL_VENV / "bin" / "python").exists(),
    reason="no .venv-eval (make evaluate creates it)",
)
def test_an_anchor_sees_only_the_prices_before_its_origin() -> None:
    prices = [100 + 10 * np.sin(2 * np.pi * t / 12) + 0.3 * t for t in range(120)]
    changed = prices[:100] + [p * 1.5 for p in prices[100:]]
    first = anchors.run(prices, [96, 100, 110], 3, False, ROOT)["paths"]
    second = anchors.run(changed, [96, 100, 110], 3, False, ROOT)["paths"]
    assert set(first) == set(anchors.ANCHORS)
    for name in anchors.ANCHORS:
        assert np.asarray(first[name]).shape == (3, 3)
        assert first[name][:2] == second[name][:2], name  # origins 96 and 100 see t < 100
        assert first[name][2] != second[name][2], name
