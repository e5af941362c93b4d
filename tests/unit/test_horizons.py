"""The forecast path's backtest: no forecast sees its own months or later ones, the rules are
what they say, every horizon is scored on the same months, and the path is the last origin's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from milkprice.errors import ConfigError
from milkprice.settings import Settings
from milkprice.train import horizons

START = pd.Period("1979-01", "M")


def prices(seed: int = 0, months: int = 506) -> pd.Series:
    """A seasonal, trending, noisy monthly price, with an empty month after the last (as the
    training frame has for the month it forecasts)."""
    rng = np.random.default_rng(seed)
    t = np.arange(months)
    log = 3 + 0.004 * t + 0.06 * np.sin(2 * np.pi * t / 12) + np.cumsum(rng.normal(0, 0.02, months))
    index = pd.period_range(START, periods=months + 1, freq="M")
    return pd.Series([*np.exp(log), np.nan], index=index)


FIRST_TARGET = START + 440


@pytest.fixture(scope="module")
def result() -> horizons.HorizonBacktest:
    return horizons.run(prices(), FIRST_TARGET, 12)


def test_changing_later_months_leaves_every_earlier_forecast_as_it_was(
    result: horizons.HorizonBacktest,
) -> None:
    cut = 470  # prices from month index 470 on are changed
    changed = prices()
    changed.iloc[cut:-1] *= np.linspace(1.3, 0.7, len(changed) - 1 - cut)
    other = horizons.run(changed, FIRST_TARGET, 12)
    assert np.array_equal(other.origins, result.origins)
    before = result.origins <= cut  # these origins know months < cut only
    for name, logs in result.forecasts.items():
        np.testing.assert_array_equal(other.forecasts[name][before], logs[before], err_msg=name)
    for field in ("chosen", "lower", "upper"):
        mine, theirs = getattr(result, field)[before], getattr(other, field)[before]
        np.testing.assert_array_equal(theirs, mine, err_msg=field)
    # and the check can fail: the origins after the cut do move
    assert not np.allclose(other.chosen[~before], result.chosen[~before], equal_nan=True)


def test_the_seasonal_ratio_is_last_year_s_move_over_the_same_months(
    result: horizons.HorizonBacktest,
) -> None:
    p = np.exp(result.y)
    i, h = 30, 5
    o = int(result.origins[i])
    expected = p[o - 1] * p[o - 1 + h - 12] / p[o - 1 - 12]
    got = p[o - 1] * np.exp(result.forecasts["seasonal_ratio_1y"][i, h - 1])
    assert got == pytest.approx(expected, rel=1e-12)
    assert np.all(result.forecasts["naive"] == 0)


def test_every_horizon_is_scored_on_the_same_months(result: horizons.HorizonBacktest) -> None:
    months = pd.period_range(FIRST_TARGET, periods=24, freq="M")
    view = horizons.view(result, months, 12)
    assert [f["horizon"] for f in view["horizons"]] == list(range(1, 13))
    table = horizons.table(result, months)
    for figures in view["horizons"]:
        rows = table[table["horizon"] == figures["horizon"]]
        assert list(rows["month"]) == [str(m) for m in months]
        # each forecast was made h months before its target
        origins = pd.PeriodIndex(rows["origin"], freq="M")
        assert all((months - origins).map(lambda d: d.n) == figures["horizon"] - 1)
        rmse = np.sqrt(np.mean((rows["path"] - rows["actual"]) ** 2))
        assert figures["path"]["rmse"] == pytest.approx(rmse)
        assert figures["naive"]["rmse_to_naive"] == pytest.approx(1.0)
        inside = (rows["path_lower"] <= rows["actual"]) & (rows["actual"] <= rows["path_upper"])
        assert figures["path"]["coverage"] == pytest.approx(inside.mean())
    # longer horizons are harder on a random walk with drift
    assert view["horizons"][11]["naive"]["rmse"] > view["horizons"][0]["naive"]["rmse"]


def test_the_path_starts_after_the_last_price(result: horizons.HorizonBacktest) -> None:
    path = horizons.path(result)
    last = prices().dropna().index.max()
    assert [m["month"] for m in path] == [str(last + h) for h in range(1, 13)]
    assert [m["horizon"] for m in path] == list(range(1, 13))
    assert all(m["lower"] < m["upper"] for m in path)
    # the chosen path is the mean of three models' log forecasts at the last origin
    logs = np.array([f[-1] for f in result.forecasts.values()])
    ratios = np.array([m["price"] for m in path]) / np.exp(result.y[-1])
    assert np.all(np.log(ratios) >= logs.min(axis=0) - 1e-12)
    assert np.all(np.log(ratios) <= logs.max(axis=0) + 1e-12)


def test_a_shorter_horizon_is_the_start_of_the_longer_one(
    result: horizons.HorizonBacktest,
) -> None:
    short = horizons.run(prices(), FIRST_TARGET, 3)
    assert [m["price"] for m in horizons.path(short)] == pytest.approx(
        [m["price"] for m in horizons.path(result)[:3]]
    )


def test_a_gap_in_the_prices_starts_the_history_after_it() -> None:
    series = prices()
    series.iloc[100] = np.nan
    assert horizons.contiguous_start(series) == START + 101


def test_the_horizon_setting_is_one_to_twelve() -> None:
    assert Settings.from_env({"MILKPRICE_HORIZON": "6"}).horizon == 6
    for bad in ("0", "13"):
        with pytest.raises(ConfigError, match=r"MILKPRICE_HORIZON.*between 1 and 12"):
            Settings.from_env({"MILKPRICE_HORIZON": bad})


def _errors(seed: int, origins: int = 300, horizon: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A chosen path of zeros and actual log changes whose spread triples halfway."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(origins) < origins // 2, 0.01, 0.03)[:, None]
    return np.zeros((origins, horizon)), rng.normal(0, 1, (origins, horizon)) * scale


def _late_coverage(monkeypatch: pytest.MonkeyPatch, **constants: float) -> float:
    """The intervals' coverage in the 40 origins after the errors' spread tripled."""
    for name, value in constants.items():
        monkeypatch.setattr(horizons, name, value)
    found = []
    for seed in range(5):
        chosen, actual = _errors(seed)
        lower, upper = horizons.intervals(chosen, actual)
        relative = np.exp(actual - chosen) - 1
        late = slice(150, 190)
        found.append(np.mean((lower[late] <= relative[late]) & (relative[late] <= upper[late])))
    return float(np.mean(found))


def test_an_interval_uses_only_the_errors_resolved_before_its_origin() -> None:
    chosen, actual = _errors(1)
    lower, upper = horizons.intervals(chosen, actual)
    i = 200
    for h in range(1, 5):
        unresolved = actual.copy()
        unresolved[i - h + 1 :, h - 1] += 0.5  # targets at or after origin i's first month
        low, high = horizons.intervals(chosen, unresolved)
        assert (low[i, h - 1], high[i, h - 1]) == (lower[i, h - 1], upper[i, h - 1])
        # and the newest resolved error does count: turned from a hit into a miss or back,
        # it moves the level (or, at its cap, the band's quantile)
        done = i - h
        ratio = np.exp(actual[done, h - 1] - chosen[done, h - 1]) - 1
        inside = lower[done, h - 1] <= ratio <= upper[done, h - 1]
        middle = (lower[done, h - 1] + upper[done, h - 1]) / 2
        resolved = actual.copy()
        resolved[done, h - 1] = chosen[done, h - 1] + (1.0 if inside else np.log1p(middle))
        low, high = horizons.intervals(chosen, resolved)
        assert (low[i, h - 1], high[i, h - 1]) != (lower[i, h - 1], upper[i, h - 1])


def test_the_adaptive_level_brings_coverage_back_after_the_spread_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step = horizons.GAMMA
    fixed = _late_coverage(monkeypatch, GAMMA=0.0)
    adaptive = _late_coverage(monkeypatch, GAMMA=step)
    assert fixed < horizons.LEVEL - 0.05  # a fixed level under-covers after the change
    assert abs(adaptive - horizons.LEVEL) < abs(fixed - horizons.LEVEL)


def test_the_recent_volatility_widens_the_interval_as_soon_as_one_step_errors_grow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # at a fixed level, so only the scale can react: with no persistence the scale is the
    # long-run one, with it the last few one-step errors lead
    persistence = horizons.PERSISTENCE
    long_run = _late_coverage(monkeypatch, GAMMA=0.0, PERSISTENCE=0.0)
    recent = _late_coverage(monkeypatch, GAMMA=0.0, PERSISTENCE=persistence)
    assert long_run < horizons.LEVEL - 0.2
    assert recent > long_run + 0.1


def test_an_interval_is_its_errors_band_times_the_spread_its_origin_expects() -> None:
    chosen, actual = _errors(2)
    lower, upper = horizons.intervals(chosen, actual)
    spread = horizons.spread(chosen, actual)
    one = actual[:, 0] - chosen[:, 0]
    i = 200
    known = one[:i]  # one-step errors of origins before i: their targets are before i
    overall, recent = np.mean(known**2), np.mean(known[-horizons.RECENT :] ** 2)
    excess = (recent - overall) * horizons.PERSISTENCE ** np.arange(1, 5)
    np.testing.assert_allclose(spread[i], np.sqrt(np.cumsum(overall + excess)))
    # a four-month interval is its scores' band times the spread its origin expects: tripled
    # one-step errors just before origin i change that spread and nothing else it sees (its
    # four-step errors and their origins' spreads are older)
    louder = actual.copy()
    louder[i - 3 : i, 0] *= 3
    low, high = horizons.intervals(chosen, louder)
    wider = horizons.spread(chosen, louder)[i, 3] / spread[i, 3]
    assert wider > 1.2
    np.testing.assert_allclose([low[i, 3], high[i, 3]], [lower[i, 3] * wider, upper[i, 3] * wider])


@pytest.mark.parametrize("n", [1, 5, 24, 60, 240])
def test_the_coverage_band_is_binomial_chance_around_the_level(n: int) -> None:
    from scipy.stats import binom

    low, high = horizons.coverage_band(n)
    k_low, k_high = round(low * n), round(high * n)
    assert (k_low / n, k_high / n) == (low, high)  # whole counts of hits
    # the bounds are inclusive and hold the central 90%: below low less than 5%, above
    # high at most 5%, and each bound is as tight as that allows
    assert binom.cdf(k_low - 1, n, horizons.LEVEL) < 0.05 <= binom.cdf(k_low, n, horizons.LEVEL)
    assert binom.sf(k_high, n, horizons.LEVEL) <= 0.05 < binom.sf(k_high - 1, n, horizons.LEVEL)
    assert binom.cdf(k_high, n, horizons.LEVEL) - binom.cdf(k_low - 1, n, horizons.LEVEL) >= 0.9


def test_the_coverage_band_of_the_real_views_and_its_edges() -> None:
    assert horizons.coverage_band(24) == (16 / 24, 22 / 24)  # 67% to 92%
    assert horizons.coverage_band(60) == (43 / 60, 53 / 60)  # 72% to 88%
    assert horizons.coverage_band(1) == (0.0, 1.0)  # one forecast: a hit or a miss, either
    low, high = horizons.coverage_band(100_000)
    assert low < horizons.LEVEL < high and high - low < 0.01  # many forecasts: tight
    assert horizons.coverage_band(24, 0.5) == (8 / 24, 16 / 24)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="at least one forecast"):
            horizons.coverage_band(bad)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="level between 0 and 1"):
            horizons.coverage_band(24, level)


def test_every_horizon_s_figures_carry_the_band_of_their_count(
    result: horizons.HorizonBacktest,
) -> None:
    for n in (24, 60):
        months = pd.period_range(FIRST_TARGET, periods=n, freq="M")
        for figures in horizons.view(result, months, 12)["horizons"]:
            assert figures["path"]["coverage_band"] == list(horizons.coverage_band(n))
