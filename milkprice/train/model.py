"""Candidate models, the rolling-origin backtest and the choice of the two served models.

Every candidate is a scikit-learn estimator that takes a 2-D array of its own features (in
``Candidate.features`` order) and predicts the price. Models of the change from last month are
wrapped in :class:`ChangeRegressor`, which adds last month's price back, so that the fitted
object, its ONNX graph and the backtest all speak of the price itself.
"""

from __future__ import annotations

import functools
import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.feature_selection import SelectKBest, mutual_info_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from milkprice.train import features as F

# ---------------------------------------------------------------- estimators


class FixedLinear(RegressorMixin, BaseEstimator):
    """A rule, not a fit: ``X @ weights + intercept`` (the naive forecasts are such rules)."""

    def __init__(self, weights: Sequence[float] = (1.0,), intercept: float = 0.0) -> None:
        self.weights = weights
        self.intercept = intercept

    def fit(self, X: Any, y: Any = None) -> FixedLinear:
        self.coef_ = np.asarray(self.weights, dtype=float)
        self.intercept_ = float(self.intercept)
        self.n_features_in_ = len(self.coef_)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=float) @ self.coef_ + self.intercept_


class ChangeRegressor(RegressorMixin, BaseEstimator):
    """Fits ``regressor`` to the change from the feature at ``base`` (last month's price)."""

    def __init__(self, regressor: Any = None, base: int = 0) -> None:
        self.regressor = regressor
        self.base = base

    def fit(self, X: Any, y: Any) -> ChangeRegressor:
        X = np.asarray(X, dtype=float)
        self.regressor_ = clone(self.regressor).fit(X, np.asarray(y, dtype=float) - X[:, self.base])
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        return np.ravel(self.regressor_.predict(X)) + X[:, self.base]


class RatioRegressor(RegressorMixin, BaseEstimator):
    """Fits ``regressor`` to the log of the ratio to the feature at ``base`` (last month's
    price), so a seasonal pattern can scale with the price level. The regressor sees every
    feature but ``base``: the level itself says little about next month's ratio."""

    def __init__(self, regressor: Any = None, base: int = 0) -> None:
        self.regressor = regressor
        self.base = base

    def _rest(self, X: np.ndarray) -> np.ndarray:
        return np.delete(X, self.base, axis=1)

    def fit(self, X: Any, y: Any) -> RatioRegressor:
        X = np.asarray(X, dtype=float)
        target = np.log(np.asarray(y, dtype=float) / X[:, self.base])
        self.regressor_ = clone(self.regressor).fit(self._rest(X), target)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        return np.exp(np.ravel(self.regressor_.predict(self._rest(X)))) * X[:, self.base]


@functools.lru_cache(maxsize=512)
def _mutual_info_cached(key: bytes, X: Any, y: Any) -> np.ndarray:
    return mutual_info_regression(X.array, y.array, random_state=0)


class _Hashed:
    """Wraps an array so lru_cache can key on its bytes."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.key = hashlib.sha1(np.ascontiguousarray(array).tobytes()).digest()

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Hashed) and other.key == self.key


def mutual_info(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``mutual_info_regression`` with a fixed seed, computed once per distinct training set.

    The old pipeline's grid refits SelectKBest for every combination on the same folds; the
    scores only depend on the data, so caching them keeps the grid from dominating training.
    """
    hx, hy = _Hashed(np.asarray(X, dtype=float)), _Hashed(np.asarray(y, dtype=float))
    return _mutual_info_cached(hx.key + hy.key, hx, hy)


# ---------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    features: tuple[str, ...]
    make: Callable[[], Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    window: int | None = None  # train on the last ``window`` months only (a recent regime)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any:
        """Fit, tuning ``grid`` by time-ordered splits inside the given window only."""
        estimator = self.make()
        if not self.grid:
            return estimator.fit(X, y)
        splits = min(5, max(2, len(y) // 12))
        search = GridSearchCV(
            estimator,
            self.grid,
            cv=TimeSeriesSplit(n_splits=splits),
            scoring="neg_root_mean_squared_error",
            error_score="raise",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            search.fit(X, y)
        return search.best_estimator_


def _ridge_change(alphas: list[float]) -> tuple[Callable[[], Any], dict[str, list[Any]]]:
    def make() -> Any:
        inner = Pipeline([("scale", StandardScaler()), ("ridge", Ridge())])
        return ChangeRegressor(inner, base=0)

    return make, {"regressor__ridge__alpha": alphas}


def _ridge_ratio() -> Any:
    # alpha is fixed: time-series splits of 60 months are too short to tune it reliably, and
    # with a few standardised features on hundreds of months a small alpha barely matters
    return RatioRegressor(Pipeline([("scale", StandardScaler()), ("ridge", Ridge(1.0))]), base=0)


def _gbm_change() -> Any:
    # Each split looks at a third of the features: as accurate here and three times as fast,
    # which keeps both backtest views inside the training run's time budget. (Row subsampling
    # was as fast, but its ONNX export drifted from the fitted model by 1e-3.)
    inner = GradientBoostingRegressor(
        n_estimators=150,
        learning_rate=0.05,
        max_depth=3,
        min_samples_leaf=10,
        max_features=0.3,
        random_state=0,
    )
    return ChangeRegressor(inner, base=0)


def _old_pipeline() -> Any:
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("select", SelectKBest(mutual_info)),
            # Ridge fits its own intercept, so the constant column adds nothing (and skl2onnx
            # would emit it as float32 inside a float64 graph).
            ("poly", PolynomialFeatures(include_bias=False)),
            ("ridge", Ridge()),
        ]
    )


ALPHAS = [0.1, 1.0, 3.0, 10.0, 30.0, 100.0]
OLD_GRID: dict[str, list[Any]] = {
    "select__k": [3, 5, 10],
    "poly__degree": [1, 2, 3],
    "ridge__alpha": [1.0, 0.1, 0.01],
}


def candidates() -> dict[str, list[Candidate]]:
    """The two pools: ``forecast`` may use every feature, ``legacy`` only the old 141."""
    last = F.LAST_PRICE
    legacy_price = (last, f"{F.PRICE}_shift3_mean", f"{F.PRICE}_shift3_std")
    seasonal = (*F.PRICE_FEATURES, *F.MONTHS)
    naive = Candidate("naive", "last month's price", (last,), FixedLinear)
    old = Candidate(
        "old_pipeline",
        "the old system: scaler, SelectKBest(mutual information), polynomial, ridge, by grid",
        F.LEGACY_FEATURES,
        _old_pipeline,
        OLD_GRID,
    )
    ridge, alphas = _ridge_change(ALPHAS)
    forecast = [
        naive,
        Candidate(
            "seasonal_naive",
            "last month's price plus last year's change into the same month",
            (last, F.CHANGE_12),
            lambda: FixedLinear((1.0, 1.0)),
        ),
        Candidate(
            "seasonal_naive_pct",
            "last month's price times last year's ratio into the same month",
            (last, F.LOG_CHANGE_12),
            lambda: RatioRegressor(FixedLinear((1.0,)), base=0),
        ),
        Candidate(
            "ridge_change",
            "ridge on the monthly change: price lags, month",
            seasonal,
            ridge,
            alphas,
        ),
        Candidate(
            "ridge_ratio_5y",
            "ridge on the monthly log change over the last five years: momentum, month",
            (last, F.LOG_CHANGE_1, F.LOG_YEAR, *F.MONTHS),
            _ridge_ratio,
            window=60,
        ),
        Candidate(
            "ridge_ratio_seasonal",
            "ridge on the monthly log change over the whole history: the last two months' "
            "changes and the same month's change one to four years back",
            F.SEASONAL_AR,
            _ridge_ratio,
        ),
        Candidate(
            "ridge_ratio_macro",
            "the same, plus the dollar's and the economy's recent log changes (trained on the "
            "months where those series exist)",
            (*F.SEASONAL_AR, *F.MACRO_CHANGES),
            _ridge_ratio,
        ),
        Candidate(
            "ridge_change_rain",
            "ridge on the monthly change: price lags, month, rainfall",
            (*seasonal, *F.RAIN_FEATURES),
            ridge,
            alphas,
        ),
        Candidate(
            "gbm_change",
            "gradient boosting on the monthly change: price lags, month, rainfall",
            (*seasonal, *F.RAIN_FEATURES),
            _gbm_change,
        ),
        old,
    ]
    legacy = [
        naive,
        Candidate(
            "ridge_change_legacy",
            "ridge on the monthly change from the legacy price and rainfall features",
            (*legacy_price, *F.RAIN_FEATURES),
            ridge,
            alphas,
        ),
        Candidate(
            "gbm_change_legacy",
            "gradient boosting on the monthly change from all legacy features",
            F.LEGACY_FEATURES,
            _gbm_change,
        ),
        old,
    ]
    return {"forecast": forecast, "legacy": legacy}


# ---------------------------------------------------------------- backtest


def _known_rows(frame: pd.DataFrame, candidate: Candidate, before: pd.Period) -> pd.DataFrame:
    """Months before ``before`` with a known price and every feature of the candidate."""
    rows = frame[(frame.index < before) & frame[F.TARGET].notna()]
    return rows.dropna(subset=list(candidate.features))


def training_rows(frame: pd.DataFrame, candidate: Candidate, before: pd.Period) -> pd.DataFrame:
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


# ---------------------------------------------------------------- intervals

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
