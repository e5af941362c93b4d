"""The forecast path: a price and an 80% interval for each of the next ``horizon`` months.

Every path model works on the log price alone and forecasts, from an origin (the first month
it does not see), the log change from the last known month to each of the next ``horizon``
months. All of them are rules or small closed-form fits, computed for every origin at once,
so a backtest of hundreds of origins times twelve horizons costs well under a second.

The backtest is a rolling origin with an expanding window: at each origin a model sees only
the prices before it and forecasts the next 1..horizon months. Horizon ``h`` is scored on the
same target months as the one-step backtest (both views), each forecast made ``h`` months
before its target. The chosen path is not one model picked on those months: at every origin
and horizon it is the mean (in logs) of the ``TOP`` models whose ``h``-step errors known at
that origin (targets before it, over the last ``window(h)`` of them) were smallest. So every
figure of the chosen path is out of sample, and the served path is the same rule applied at
the last origin. Its interval comes from its own ``h``-step relative errors known before each
origin, each divided by the spread the one-step errors known at its own origin expected
(:func:`spread`), at a level that adapts to the misses resolved before that origin, so the
coverage reported is out of sample too; :func:`coverage_band` says how far from 80% chance
alone takes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from milkprice import accuracy
from milkprice.train.backtest import metrics

LEVEL = 0.8
TOP = 3  # the chosen path averages the best three models at each origin and horizon
CALIBRATION = 36  # h-step errors known before the first scored month, at least
MIN_ERRORS = 12  # fewer known errors choose nothing and give no interval
GAMMA = 0.05  # the step of the interval's level after each resolved forecast
MAX_LEVEL = 0.95  # beyond it a few extreme errors (2008's) would set the interval alone
RECENT = 3  # the one-step errors that measure the recent volatility
PERSISTENCE = 0.8  # the share of the recent variance's excess that persists a month on
BAND = accuracy.BAND  # the share of chance outcomes a coverage band holds
SEASON = 12
METHOD = (
    "rolling origin, expanding window, refit at every origin, 1..H months ahead; at each "
    "origin and horizon the mean log forecast of the 3 models with the smallest h-step "
    "errors known then (last 24 + 8h of them); 80% interval: every h-step relative error "
    "known then, each divided by the spread expected at its origin (the variance of the "
    "last 3 one-step errors, reverting to that of all of them by 0.8 a month, summed over "
    "the h months), their median plus and minus a quantile of their distance to it, times "
    "the spread expected now; the quantile's level adapted online to the misses resolved "
    "then (adaptive conformal inference, step 0.05, at most 0.95)"
)


def window(h: int) -> int:
    """How many past h-step errors rank the models: h-step errors overlap, so a longer
    horizon needs more of them for as much evidence."""
    return 24 + 8 * h


Forecaster = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class PathModel:
    name: str
    description: str
    history: int  # months before an origin the model needs
    forecast: Forecaster  # (log prices, origins, horizon) -> log change to each month


# ---------------------------------------------------------------- the models


def _steps(origins: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Index grids: each origin's last known month, and each target month."""
    last = origins[:, None] - 1
    return last, last + np.arange(1, horizon + 1)[None, :]


def naive(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    return np.zeros((len(origins), horizon))


def seasonal_ratio(years: int) -> Forecaster:
    """The same months' log change ``1..years`` years back, averaged."""

    def forecast(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        last, target = _steps(origins, horizon)
        back = [y[target - SEASON * k] - y[last - SEASON * k] for k in range(1, years + 1)]
        return np.mean(back, axis=0)

    return forecast


def _moving_average(y: np.ndarray) -> np.ndarray:
    """The centred 2x12 moving average; month ``t``'s needs the months up to ``t + 6``."""
    kernel = np.r_[0.5, np.ones(SEASON - 1), 0.5] / SEASON
    out = np.full(len(y), np.nan)
    out[6 : len(y) - 6] = np.convolve(y, kernel, mode="valid")
    return out


def decomposition(years: int, drift: int, damping: float) -> Forecaster:
    """Classical decomposition: the seasonal profile of the last ``years`` years (from the
    months whose moving average the origin knows), the last deseasonalised level, and the
    trend of the last ``drift`` deseasonalised months, damped by ``damping`` a month."""
    steps = np.arange(1, 1 + 12 * 4)
    gain = np.cumsum(damping**steps)

    def forecast(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        detrended = y - _moving_average(y)
        out = np.empty((len(origins), horizon))
        for i, o in enumerate(origins):
            end = o - 7  # the last month whose moving average uses only months before o
            seen = detrended[end - SEASON * years + 1 : end + 1]
            profile = seen.reshape(years, SEASON).mean(axis=0)
            profile -= profile.mean()
            season = np.roll(profile, (end + 1) % SEASON)  # season[t % 12] is month t's
            level = y[o - 1] - season[(o - 1) % SEASON]
            slope = (level - (y[o - 1 - drift] - season[(o - 1 - drift) % SEASON])) / drift
            targets = o - 1 + np.arange(1, horizon + 1)
            out[i] = level + season[targets % SEASON] + slope * gain[:horizon] - y[o - 1]
        return out

    return forecast


def _direct_features(y: np.ndarray, origins: np.ndarray, h: int) -> np.ndarray:
    """What a direct model of horizon ``h`` sees at each origin: the same span's log change
    one to four years back, and the recent momentum."""
    last = origins - 1
    span = [y[last + h - SEASON * k] - y[last - SEASON * k] for k in range(1, 5)]
    momentum = [
        y[last] - y[last - 1],
        y[last] - y[last - 3],
        y[last] - y[last - 12],
        y[last - 1] - y[last - 13],
    ]
    return np.column_stack([*span, *momentum])


def _ridge(X: np.ndarray, target: np.ndarray, row: np.ndarray, alpha: float) -> float:
    """Ridge on standardised features, fitted in closed form, applied to one row."""
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-12
    Z = (X - mean) / scale
    centre = target.mean()
    weights = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (target - centre))
    return float(centre + ((row - mean) / scale) @ weights)


def direct_ridge(months: int, alpha: float) -> Forecaster:
    """One ridge per horizon on the log change ``h`` months on, fitted at each origin on
    the last ``months`` earlier origins whose ``h``-month target the origin already knows."""
    first = 1 + SEASON * 4  # the first origin with four years of spans

    def forecast(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        out = np.empty((len(origins), horizon))
        for h in range(1, horizon + 1):
            train = np.arange(first, len(y) - h + 1)  # origins whose target is known
            X = _direct_features(y, train, h)
            target = y[train + h - 1] - y[train - 1]
            rows = _direct_features(y, origins, h)
            for i, o in enumerate(origins):
                fit = (train <= o - h) & (train > o - h - months)
                out[i, h - 1] = _ridge(X[fit], target[fit], rows[i], alpha)
        return out

    return forecast


def path_models() -> list[PathModel]:
    return [
        PathModel("naive", "the last known price", 1, naive),
        PathModel(
            "seasonal_ratio_1y",
            "last known price times last year's ratio over the same months",
            SEASON + 1,
            seasonal_ratio(1),
        ),
        PathModel(
            "seasonal_ratio_3y",
            "last known price times the same months' ratio, averaged over three years",
            3 * SEASON + 1,
            seasonal_ratio(3),
        ),
        PathModel(
            "decomposition_damped",
            "five-year seasonal profile, last level, last six months' trend damped 0.8",
            5 * SEASON + 7,
            decomposition(5, 6, 0.8),
        ),
        PathModel(
            "decomposition_trend_3y",
            "five-year seasonal profile, last level, the last three years' trend",
            5 * SEASON + 7,
            decomposition(5, 36, 1.0),
        ),
        PathModel(
            "direct_ridge",
            "one ridge per horizon on the log change: same span one to four years back, "
            "momentum; the last 20 years of origins",
            4 * SEASON + 1 + 60,
            direct_ridge(240, 3.0),
        ),
    ]


# ---------------------------------------------------------------- backtest, choice, interval


@dataclass
class HorizonBacktest:
    """Every model's forecasts from every origin, the chosen path's, and its intervals.

    Arrays are (origins, horizon); ``start`` is the month of index 0 of the log prices.
    """

    start: pd.Period
    y: np.ndarray
    origins: np.ndarray
    forecasts: dict[str, np.ndarray]  # model -> log change forecasts
    chosen: np.ndarray  # log change forecasts of the chosen path (NaN: nothing to choose on)
    lower: np.ndarray  # the interval as ratios to the chosen forecast (NaN: no interval)
    upper: np.ndarray
    seconds: float

    def month(self, index: int | np.integer) -> pd.Period:
        return self.start + int(index)

    def index(self, month: pd.Period) -> int:
        return int((month - self.start).n)


def _actual(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The actual log change from each origin's last month to each target; NaN if unknown."""
    last, target = _steps(origins, horizon)
    known = target < len(y)
    values = np.where(known, y[np.minimum(target, len(y) - 1)], np.nan)
    return values - y[last]


def _known_before(i: int, h: int, count: int) -> slice:
    """Positions of the (up to) ``count`` origins whose h-month target is before origin i."""
    newest = i - h  # origin o - h: its target, o - 1, is the last month o knows
    return slice(max(0, newest - count + 1), max(0, newest + 1))


def choose(forecasts: dict[str, np.ndarray], actual: np.ndarray) -> np.ndarray:
    """At each origin and horizon, the mean of the ``TOP`` models of smallest squared h-step
    log error over the last ``window(h)`` errors known at that origin."""
    stack = np.stack(list(forecasts.values()))  # model, origin, horizon
    errors = (stack - actual[None]) ** 2
    chosen = np.full(actual.shape, np.nan)
    for h in range(1, actual.shape[1] + 1):
        for i in range(actual.shape[0]):
            past = errors[:, _known_before(i, h, window(h)), h - 1]
            if past.shape[1] < MIN_ERRORS or not np.isfinite(past).all():
                continue
            best = np.argsort(past.mean(axis=1), kind="stable")[:TOP]
            chosen[i, h - 1] = stack[best, i, h - 1].mean()
    return chosen


def _band(past: np.ndarray, level: float) -> tuple[float, float]:
    """The errors' median plus and minus the ``level`` quantile of their distance to it."""
    centre = float(np.median(past))
    half = float(np.quantile(np.abs(past - centre), min(max(level, 0.0), 1.0)))
    return centre - half, centre + half


def spread(chosen: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The spread each origin expects of its h-step log errors, from the one-step errors it
    knows (NaN with fewer than MIN_ERRORS): the variance of the last ``RECENT`` reverts to
    that of all of them, its excess shrinking by ``PERSISTENCE`` each month ahead, and an
    h-step error sums the next h months'. Volatility comes in spells, so a short horizon's
    interval follows the recent months, a long one's the long run."""
    one = actual[:, 0] - chosen[:, 0]  # origin j's one-step error is known from origin j + 1
    decay = PERSISTENCE ** np.arange(1, chosen.shape[1] + 1)
    out = np.full(chosen.shape, np.nan)
    for i in range(len(one)):
        known = one[:i][np.isfinite(one[:i])]
        if len(known) < MIN_ERRORS:
            continue
        overall, recent = np.mean(known**2), np.mean(known[-RECENT:] ** 2)
        out[i] = np.sqrt(np.cumsum(overall + decay * (recent - overall)))
    return np.maximum(out, 1e-6)  # a series that never moved still divides


def _adaptive(relative: np.ndarray, scale: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """One horizon's intervals: the relative errors over their origins' ``scale`` are the
    scores; origin i's band is their median plus and minus a quantile of their distance to
    it, times ``scale[i]``. The quantile's level follows adaptive conformal inference: up by
    ``GAMMA * LEVEL`` after a miss and down by ``GAMMA * (1 - LEVEL)`` after a hit, so its
    long-run coverage tracks ``LEVEL`` even when the scale misjudges the spread. It stops at
    ``MAX_LEVEL``: after a year of misses it would otherwise widen the band to the largest
    error ever seen and stay there for as long again. At origin i the resolved forecasts are
    those of origins up to i - h (their targets are before i), the same ones the band is
    built from: every one since the backtest's first origin."""
    lower = np.full(len(relative), np.nan)
    upper = np.full(len(relative), np.nan)
    scores = relative / scale
    level = LEVEL
    for i in range(len(relative)):
        done = i - h  # the forecast whose target is the last month origin i knows
        if done >= 0 and np.isfinite(lower[done]) and np.isfinite(relative[done]):
            inside = lower[done] <= relative[done] <= upper[done]
            level = min(level + GAMMA * (LEVEL - float(inside)), MAX_LEVEL)
        past = scores[_known_before(i, h, len(relative))]
        past = past[np.isfinite(past)]
        if len(past) >= MIN_ERRORS and np.isfinite(scale[i]):
            low, high = _band(past, level)
            lower[i], upper[i] = low * scale[i], high * scale[i]
    return lower, upper


def intervals(chosen: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each forecast's interval, as ratios to it, from the chosen path's relative h-step
    errors known at its origin, scaled by the spread expected at theirs (:func:`spread`);
    NaN with fewer than MIN_ERRORS.

    The band is the scores' median plus and minus a quantile of their distance from it (one
    quantile of all the errors, steadier than two tail quantiles of overlapping h-step
    errors), at a level adapted online to the misses seen so far (:func:`_adaptive`)."""
    relative = np.exp(actual - chosen) - 1
    scale = spread(chosen, actual)
    bands = [
        _adaptive(relative[:, h - 1], scale[:, h - 1], h) for h in range(1, chosen.shape[1] + 1)
    ]
    return np.column_stack([b[0] for b in bands]), np.column_stack([b[1] for b in bands])


def coverage_band(n: int, level: float = LEVEL) -> tuple[float, float]:
    """The coverages an exact ``level`` interval shows on ``n`` forecasts by chance: the
    central ``BAND`` of Binomial(n, level) hits, as shares of n. Both bounds are inclusive
    (a coverage c passes when low <= c <= high) and hold at least ``BAND`` of the chance
    outcomes, fewer than 5% falling below and at most 5% above. The hits are taken as
    independent: true one month ahead, optimistic further on, where forecasts from
    neighbouring origins share months and miss together."""
    if n < 1:
        raise ValueError(f"a coverage band needs at least one forecast, not {n}")
    if not 0 < level < 1:
        raise ValueError(f"a coverage band needs a level between 0 and 1, not {level}")
    return accuracy.coverage_band(n, level, BAND)


def first_origin(models: list[PathModel], first_target: pd.Period, start: pd.Period) -> int:
    """The earliest origin the backtest needs: the scored targets' origins, the calibration
    errors before them, and the ranking errors before those, as far as the history allows."""
    horizon_back = 2 * SEASON
    need = SEASON - 1 + CALIBRATION + horizon_back + window(SEASON)
    earliest = max(m.history for m in models)
    return max(earliest, (first_target - start).n - need)


def run(prices: pd.Series, first_target: pd.Period, horizon: int) -> HorizonBacktest:
    """Every model and the chosen path from every origin the scored targets need, through
    the origin after the last known price (the served path)."""
    import time

    begin = time.perf_counter()
    known = prices.dropna()
    start = contiguous_start(prices)
    y = np.log(prices.loc[start : known.index.max()].to_numpy(float))
    models = path_models()
    origins = np.arange(first_origin(models, first_target, start), len(y) + 1)
    forecasts = {m.name: m.forecast(y, origins, horizon) for m in models}
    actual = _actual(y, origins, horizon)
    chosen = choose(forecasts, actual)
    lower, upper = intervals(chosen, actual)
    seconds = time.perf_counter() - begin
    return HorizonBacktest(start, y, origins, forecasts, chosen, lower, upper, seconds)


def contiguous_start(prices: pd.Series) -> pd.Period:
    """The first month of the last unbroken run of positive prices (a gap restarts it)."""
    known = prices.loc[: prices.dropna().index.max()]
    broken = known.isna() | (known <= 0)
    return known.index[broken].max() + 1 if broken.any() else known.index.min()


# ---------------------------------------------------------------- figures, path, table


def _prices(result: HorizonBacktest, logs: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Prices of log-change forecasts at the given origin positions."""
    return np.exp(result.y[result.origins[positions] - 1] + logs[positions])


def scored(
    result: HorizonBacktest, months: pd.PeriodIndex, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Origin positions whose h-month forecast targets ``months``, and those months' prices."""
    targets = np.array([result.index(m) for m in months])
    positions = targets - h + 1 - result.origins[0]
    return positions, np.exp(result.y[targets])


def _figures(actual: np.ndarray, forecast: np.ndarray, naive_rmse: float) -> dict[str, float]:
    found = metrics(actual, forecast)
    return {**found, "rmse_to_naive": found["rmse"] / naive_rmse}


def horizon_figures(result: HorizonBacktest, months: pd.PeriodIndex, h: int) -> dict:
    """One horizon on one view: the chosen path's figures and coverage, the naive forecast's,
    and every model's, all on the same target months."""
    positions, actual = scored(result, months, h)
    naive = _prices(result, result.forecasts["naive"][:, h - 1], positions)
    naive_rmse = metrics(actual, naive)["rmse"]
    chosen = _prices(result, result.chosen[:, h - 1], positions)
    ratio = actual / chosen - 1
    low, high = result.lower[positions, h - 1], result.upper[positions, h - 1]
    path: dict[str, float | list[float]] = {
        **_figures(actual, chosen, naive_rmse),
        "coverage": float(np.mean((low <= ratio) & (ratio <= high))),
        "coverage_band": list(coverage_band(len(months))),
    }
    return {
        "horizon": h,
        "scored": len(months),
        "path": path,
        "naive": _figures(actual, naive, naive_rmse),
        "models": {
            name: _figures(actual, _prices(result, logs[:, h - 1], positions), naive_rmse)
            for name, logs in result.forecasts.items()
        },
    }


def view(result: HorizonBacktest, months: pd.PeriodIndex, horizon: int) -> dict:
    return {
        "months": [str(months[0]), str(months[-1])],
        "horizons": [horizon_figures(result, months, h) for h in range(1, horizon + 1)],
    }


def path(result: HorizonBacktest) -> list[dict]:
    """The served path: from the origin after the last known price, each month's price and
    interval; a month the rule cannot choose for (too short a history) is left out."""
    last = len(result.origins) - 1
    price = float(np.exp(result.y[-1]))
    months = []
    for h in range(1, result.chosen.shape[1] + 1):
        point = price * float(np.exp(result.chosen[last, h - 1]))
        low, high = result.lower[last, h - 1], result.upper[last, h - 1]
        if not np.isfinite([point, low, high]).all():
            break
        months.append(
            {
                "month": str(result.month(len(result.y) - 1 + h)),
                "horizon": h,
                "price": point,
                "lower": point * (1 + float(low)),
                "upper": point * (1 + float(high)),
            }
        )
    return months


def table(result: HorizonBacktest, months: pd.PeriodIndex) -> pd.DataFrame:
    """Every forecast of the months scored (the long view): one row per target and horizon,
    each model's price, the chosen path's with its interval, and the actual price."""
    rows = []
    for h in range(1, result.chosen.shape[1] + 1):
        positions, actual = scored(result, months, h)
        frame = pd.DataFrame(
            {
                "month": [str(m) for m in months],
                "horizon": h,
                "origin": [str(result.month(o)) for o in result.origins[positions]],
                "actual": actual,
            }
        )
        for name, logs in result.forecasts.items():
            frame[name] = _prices(result, logs[:, h - 1], positions)
        frame["path"] = _prices(result, result.chosen[:, h - 1], positions)
        frame["path_lower"] = frame["path"] * (1 + result.lower[positions, h - 1])
        frame["path_upper"] = frame["path"] * (1 + result.upper[positions, h - 1])
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)
