"""Prediction intervals for the served forecast, from its own past one-step-ahead errors.

The errors are relative (actual / forecast - 1), so an interval scales with the price level,
and each month's interval is built from earlier months only, so the coverage is out of sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from milkprice.train import features as F
from milkprice.train.backtest import Backtest, backtest
from milkprice.train.candidates import Candidate

INTERVAL_LEVEL = 0.8
CALIBRATION_MONTHS = 36


@dataclass
class Interval:
    """An 80% interval as ratios to the point forecast, from past one-step-ahead errors."""

    lower: float
    upper: float
    coverage: float  # share of scored months whose actual price fell inside (out of sample)
    scored: int
    calibration: int

    def around(self, price: float) -> tuple[float, float]:
        return price * (1 + self.lower), price * (1 + self.upper)


def _quantiles(relative: np.ndarray) -> tuple[float, float]:
    tail = (1 - INTERVAL_LEVEL) / 2
    return float(np.quantile(relative, tail)), float(np.quantile(relative, 1 - tail))


def _relative_errors(frame: pd.DataFrame, predictions: pd.Series) -> pd.Series:
    actual = frame.loc[predictions.index, F.TARGET].to_numpy(float)
    return pd.Series(actual / predictions.to_numpy(float) - 1, index=predictions.index)


def rolling_bounds(
    frame: pd.DataFrame, predictions: pd.Series, months: pd.PeriodIndex
) -> pd.DataFrame:
    """Each month's interval, as ratios to its forecast, from the relative errors of the (up
    to) ``CALIBRATION_MONTHS`` forecasts before it only; NaN with fewer than a year of them."""
    relative = _relative_errors(frame, predictions)
    rows = []
    for month in months:
        past = relative[relative.index < month].iloc[-CALIBRATION_MONTHS:]
        rows.append(_quantiles(past.to_numpy()) if len(past) >= 12 else (np.nan, np.nan))
    return pd.DataFrame(rows, index=months, columns=["lower", "upper"])


def conformal_interval(
    frame: pd.DataFrame,
    candidate: Candidate,
    scored: pd.PeriodIndex,
    known: pd.Series | None = None,
) -> tuple[Interval, Backtest]:
    """Split-conformal intervals on relative errors, checked honestly.

    The candidate is backtested over the ``CALIBRATION_MONTHS`` before the scored months as
    well; each scored month's interval comes only from the errors of the months before it
    (a rolling window), so the coverage reported is out of sample. The interval served for
    the next month uses the errors of the last ``CALIBRATION_MONTHS`` months. Forecasts in
    ``known`` (the long backtest view) are reused, not recomputed.
    """
    start = scored[0] - CALIBRATION_MONTHS
    months = pd.period_range(start, scored[-1], freq="M")
    months = months[frame.loc[months, F.TARGET].notna().to_numpy()]
    long = backtest(frame, candidate, pd.PeriodIndex(months), known)
    bounds = rolling_bounds(frame, long.predictions, scored)
    errors = _relative_errors(frame, long.predictions)
    relative = errors.loc[scored].to_numpy()
    inside = (bounds["lower"].to_numpy() <= relative) & (relative <= bounds["upper"].to_numpy())
    low, high = _quantiles(errors.iloc[-CALIBRATION_MONTHS:].to_numpy())
    interval = Interval(low, high, float(np.mean(inside)), len(scored), CALIBRATION_MONTHS)
    return interval, long
