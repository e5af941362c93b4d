"""Candidates, the backtest's time order, and exports that serve what was evaluated."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import Ridge

from milkprice.errors import ExportError
from milkprice.train import artifacts, data
from milkprice.train import features as F
from milkprice.train.backtest import (
    backtest,
    fit_final,
    metrics,
    training_rows,
    unscorable,
    view,
)
from milkprice.train.candidates import Candidate, candidates
from milkprice.train.estimators import ChangeRegressor, FixedLinear
from milkprice.train.intervals import CALIBRATION_MONTHS, conformal_interval, rolling_bounds
from tests.support.buckets import TODAY


@pytest.fixture(scope="module")
def frame(sample_raw: dict[str, bytes]) -> pd.DataFrame:
    return F.build(data.clean(sample_raw, F.REQUIRED_MACRO, TODAY))


def test_fixed_linear_is_a_rule() -> None:
    X = np.array([[100.0, 5.0], [200.0, -3.0]])
    assert FixedLinear((1.0, 1.0)).fit(X).predict(X).tolist() == [105.0, 197.0]


def test_change_regressor_models_the_change() -> None:
    rng = np.random.default_rng(0)
    last = rng.uniform(100, 300, 200)
    x = rng.normal(size=200)
    y = last + 2.0 * x  # the change is 2x
    X = np.column_stack([last, x])
    model = ChangeRegressor(Ridge(alpha=1e-6), base=0).fit(X, y)
    assert model.regressor_.coef_[1] == pytest.approx(2.0, rel=1e-3)
    assert model.regressor_.coef_[0] == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(model.predict(X), y, rtol=1e-4)


class _Spy(FixedLinear):
    """Records the last row it was fitted on."""

    seen: ClassVar[list[int]] = []

    def fit(self, X: object, y: object = None) -> _Spy:
        _Spy.seen.append(len(np.asarray(X)))
        return super().fit(X, y)


def test_backtest_trains_only_on_earlier_months(frame: pd.DataFrame) -> None:
    months = F.evaluation_months(frame, 6)
    candidate = Candidate("spy", "spy", (F.LAST_PRICE,), _Spy)
    _Spy.seen.clear()
    result = backtest(frame, candidate, months)
    for month, n in zip(months, _Spy.seen, strict=True):
        assert n == len(training_rows(frame, candidate, month))
        assert training_rows(frame, candidate, month).index.max() == month - 1
    # the naive rule's prediction is last month's price, exactly
    np.testing.assert_allclose(
        result.predictions.to_numpy(), frame.loc[months - 1, F.TARGET].to_numpy()
    )


def test_metrics() -> None:
    m = metrics(np.array([100.0, 200.0]), np.array([110.0, 190.0]))
    assert m == {"rmse": 10.0, "mae": 10.0, "mape": pytest.approx(7.5)}


@pytest.mark.parametrize("name", sorted({c.name for pool in candidates().values() for c in pool}))
def test_every_candidate_exports_to_onnx_and_skops_exactly(frame: pd.DataFrame, name: str) -> None:
    pools = candidates()
    candidate = next(c for pool in pools.values() for c in pool if c.name == name)
    fitted, _ = fit_final(frame, candidate)
    rows = training_rows(frame, candidate, frame.index.max())
    X = rows[list(candidate.features)].to_numpy(float)
    onnx_bytes = artifacts.to_onnx(fitted, X.shape[1])
    skops_bytes = artifacts.to_skops(fitted)
    assert artifacts.verify(fitted, onnx_bytes, skops_bytes, X) <= 1e-6
    np.testing.assert_allclose(artifacts.onnx_predict(onnx_bytes, X), fitted.predict(X), rtol=1e-6)


def test_verify_refuses_a_model_that_serves_other_numbers(frame: pd.DataFrame) -> None:
    X = frame[[F.LAST_PRICE]].dropna().to_numpy(float)
    good = FixedLinear((1.0,)).fit(X)
    other = FixedLinear((1.01,)).fit(X)
    with pytest.raises(ExportError, match="disagrees"):
        artifacts.verify(good, artifacts.to_onnx(other, 1), artifacts.to_skops(good), X)


def test_skops_refuses_untrusted_types() -> None:
    payload = sio.dumps({"x": pd.Timestamp("2020-01-01")})
    with pytest.raises(ValueError, match="untrusted"):
        artifacts.from_skops(payload)


def test_conformal_interval_is_out_of_sample(frame: pd.DataFrame) -> None:
    naive = Candidate("naive", "naive", (F.LAST_PRICE,), FixedLinear)
    scored = F.evaluation_months(frame, 12)
    interval, long = conformal_interval(frame, naive, scored)
    assert len(long.predictions) == 12 + CALIBRATION_MONTHS
    assert interval.lower < 0 < interval.upper
    assert 0 <= interval.coverage <= 1 and interval.scored == 12
    low, high = interval.around(100.0)
    assert low == pytest.approx(100 * (1 + interval.lower)) and high > 100


def test_one_long_backtest_gives_the_short_view(frame: pd.DataFrame) -> None:
    candidate = next(c for c in candidates()["forecast"] if c.name == "ridge_ratio_seasonal")
    short, long = F.evaluation_months(frame, 4), F.evaluation_months(frame, 10)
    alone = backtest(frame, candidate, short)
    seen = view(frame, backtest(frame, candidate, long), short)
    pd.testing.assert_series_equal(alone.predictions, seen.predictions)
    assert alone.metrics == seen.metrics
    # known forecasts are reused, not refitted: a wrong one shows through
    known = alone.predictions.copy()
    known.iloc[0] += 50.0
    reused = backtest(frame, candidate, short, known)
    assert reused.predictions.iloc[0] == known.iloc[0]
    assert reused.metrics["rmse"] > alone.metrics["rmse"]


def test_a_candidate_without_enough_months_is_not_scored(frame: pd.DataFrame) -> None:
    first = F.evaluation_months(frame, 6)[0]
    recent = frame.copy()
    recent.loc[recent.index < first - 12, F.MACRO_CHANGES[0]] = np.nan
    candidate = Candidate("macro", "macro", (F.LAST_PRICE, F.MACRO_CHANGES[0]), FixedLinear)
    assert unscorable(frame, candidate, first) is None
    why = unscorable(recent, candidate, first)
    assert why is not None and "only 12 months" in why and str(first) in why


def test_rolling_bounds_use_only_earlier_errors(frame: pd.DataFrame) -> None:
    naive = Candidate("naive", "naive", (F.LAST_PRICE,), FixedLinear)
    months = F.evaluation_months(frame, 30)
    predictions = backtest(frame, naive, months).predictions
    bounds = rolling_bounds(frame, predictions, months)
    assert bounds.iloc[:12].isna().all().all()  # under a year of errors: no interval
    month = months[20]
    changed = predictions.copy()
    changed.loc[month:] *= 1.5  # later errors must not move this month's interval
    after = rolling_bounds(frame, changed, months)
    pd.testing.assert_series_equal(bounds.loc[month], after.loc[month])
    assert not bounds.loc[months[21]].equals(after.loc[months[21]])
