"""The rolling-origin backtest: each month forecast by a model fitted on the months before it.

Both the choice of the served models and the figures the manifest reports come from here, so
no month's own price (or any later one) may reach the fit that forecasts it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from milkprice.train import features as F
from milkprice.train.candidates import Candidate


def _known_rows(frame: pd.DataFrame, candidate: Candidate, before: pd.Period) -> pd.DataFrame:
    """Months before ``before`` with a known price and every feature of the candidate."""
    rows = frame[(frame.index < before) & frame[F.TARGET].notna()]
    return rows.dropna(subset=list(candidate.features))


def training_rows(frame: pd.DataFrame, candidate: Candidate, before: pd.Period) -> pd.DataFrame:
    """The rows a fit for ``before`` may see: the known months, cut to the candidate's window."""
    rows = _known_rows(frame, candidate, before)
    return rows.iloc[-candidate.window :] if candidate.window else rows


def metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    error = predicted - actual
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "mape": float(np.mean(np.abs(error) / np.abs(actual)) * 100),
    }


@dataclass
class Backtest:
    name: str
    predictions: pd.Series
    metrics: dict[str, float]
    seconds: float


MIN_TRAINING_MONTHS = 36  # fewer months with all of a candidate's features cannot train it


def unscorable(frame: pd.DataFrame, candidate: Candidate, first: pd.Period) -> str | None:
    """Why ``candidate`` cannot be backtested from ``first`` on, or None.

    A candidate whose features only exist in recent years (a macro series) needs enough
    months with all of them before the first scored month.
    """
    n = len(_known_rows(frame, candidate, first))
    if n >= MIN_TRAINING_MONTHS:
        return None
    return f"only {n} months before {first} have all its features ({MIN_TRAINING_MONTHS} needed)"


def backtest(
    frame: pd.DataFrame,
    candidate: Candidate,
    months: pd.PeriodIndex,
    known: pd.Series | None = None,
) -> Backtest:
    """Rolling origin, expanding window, one step ahead, refit (and retuned) at every origin.

    ``known`` holds forecasts this candidate already made for some of ``months`` (an origin's
    forecast depends only on the months before it, so it is the same in every view).
    """
    start = time.perf_counter()
    predictions = {}
    cols = list(candidate.features)
    # scikit-learn's per-call input checks cost as much as the small fits themselves; the
    # rows are finite floats by construction (training_rows drops missing values)
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for month in months:
            if known is not None and month in known.index:
                predictions[month] = float(known[month])
                continue
            rows = training_rows(frame, candidate, month)
            model = candidate.fit(rows[cols].to_numpy(float), rows[F.TARGET].to_numpy(float))
            row = frame.loc[[month], cols].to_numpy(float)
            predictions[month] = float(np.ravel(model.predict(row))[0])
    series = pd.Series(predictions, name=candidate.name, dtype=float)
    return Backtest(candidate.name, series, _score(frame, series), time.perf_counter() - start)


def _score(frame: pd.DataFrame, predictions: pd.Series) -> dict[str, float]:
    actual = frame.loc[predictions.index, F.TARGET].to_numpy(float)
    return metrics(actual, predictions.to_numpy(float))


def view(frame: pd.DataFrame, result: Backtest, months: pd.PeriodIndex) -> Backtest:
    """The same backtest scored on a subset of its months (the short view of the long one)."""
    series = result.predictions.loc[months]
    return Backtest(result.name, series, _score(frame, series), result.seconds)


def fit_final(frame: pd.DataFrame, candidate: Candidate) -> tuple[Any, int]:
    """Refit the chosen candidate on every month with a known price."""
    rows = training_rows(frame, candidate, frame.index.max() + 1)
    cols = list(candidate.features)
    model = candidate.fit(rows[cols].to_numpy(float), rows[F.TARGET].to_numpy(float))
    return model, len(rows)
