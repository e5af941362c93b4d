"""The estimators of our own, and the scoring function the old pipeline selects features with.

Every candidate is a scikit-learn estimator that takes a 2-D array of its own features and
predicts the price. Models of the change from last month are wrapped in
:class:`ChangeRegressor`, which adds last month's price back, so that the fitted object, its
ONNX graph and the backtest all speak of the price itself.

Stored pipelines name these types by this module's path: ``artifacts.TRUSTED`` lists them, and
``artifacts.MOVED`` lets pipelines saved under the earlier paths load as the same classes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.feature_selection import mutual_info_regression


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
