"""Live accuracy in pure Python: the figures per horizon and the drift state of a ledger.

Shared by the training side (which stores them in ``ledger/forecasts.json``), the CLI and
anything that wants the drift as a metric; like the contract it imports no numpy, pandas or
scipy, so the predict side may use it too (it only reads what training stored).

Drift is said when live errors leave what the backtest promised:

* ``coverage``: at some horizon the interval held fewer of the scored months than the lower
  end of the central 90% band of a binomial with the interval's level (80%) for that count,
  i.e. fewer than a well-calibrated interval would hold 19 times out of 20;
* ``misses``: the last ``MISSES`` one-month forecasts (by month) all fell outside their
  intervals (with an 80% interval, that happens by chance 0.8% of the time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from milkprice.contract import (
    Drift,
    DriftSignal,
    ErrorFigures,
    LiveHorizon,
    ScoredForecast,
)

LEVEL = 0.8  # every interval served is an 80% one
BAND = 0.9  # the central mass of the coverage band
MISSES = 3  # one-month misses in a row that say drift
HORIZONS = 12


def month_index(month: str) -> int:
    """Months since year 0 of a ``YYYY-MM`` string (so months subtract)."""
    return int(month[:4]) * 12 + int(month[5:7]) - 1


def month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def add_months(month: str, n: int) -> str:
    return month_name(month_index(month) + n)


def binomial_quantile(q: float, n: int, p: float) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Binomial(n, p), exact to rounding: each
    term in logs (``math.lgamma``), so that a count of any size neither overflows nor
    underflows to a wrong bound."""
    log_p, log_q = math.log(p), math.log1p(-p)
    whole = math.lgamma(n + 1)
    total = 0.0
    for k in range(n + 1):
        log_term = whole - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        total += math.exp(log_term + k * log_p + (n - k) * log_q)
        if total >= q - 1e-12:
            return k
    return n


def coverage_band(n: int, level: float = LEVEL, mass: float = BAND) -> tuple[float, float]:
    """The central ``mass`` band of the share of ``n`` intervals at ``level`` that hold
    their actual: the (1 - mass) / 2 and (1 + mass) / 2 quantiles of Binomial(n, level) / n."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1 - mass) / 2
    return binomial_quantile(tail, n, level) / n, binomial_quantile(1 - tail, n, level) / n


def _errors(pairs: Sequence[tuple[float, float]]) -> ErrorFigures:
    """RMSE, MAE and bias of (forecast, actual) pairs."""
    errors = [f - a for f, a in pairs]
    n = len(errors)
    return ErrorFigures(
        rmse=math.sqrt(sum(e * e for e in errors) / n),
        mae=sum(abs(e) for e in errors) / n,
        bias=sum(errors) / n,
    )


def horizon_figures(
    forecasts: Sequence[ScoredForecast],
    backtest: Mapping[int, tuple[float | None, float | None]] | None = None,
    horizons: int = HORIZONS,
) -> list[LiveHorizon]:
    """Each horizon with scored forecasts: their figures, the naive forecast's on the same
    months, the interval's coverage and its band; ``backtest``: horizon -> (RMSE, coverage)
    the newest served path promised, shown beside."""
    found = []
    for h in range(1, horizons + 1):
        scored = [f for f in forecasts if f.horizon == h]
        if not scored:
            continue
        mine = _errors([(f.price, f.actual) for f in scored])
        naive = _errors([(f.naive, f.actual) for f in scored])
        judged = [f.inside for f in scored if f.inside is not None]
        inside = sum(judged)
        promised = (backtest or {}).get(h, (None, None))
        found.append(
            LiveHorizon(
                horizon=h,
                count=len(scored),
                forecast=mine,
                naive=naive,
                rmse_to_naive=mine.rmse / naive.rmse if naive.rmse > 0 else None,
                intervals=len(judged),
                inside=inside,
                coverage=inside / len(judged) if judged else None,
                coverage_band=list(coverage_band(len(judged))) if judged else [],
                backtest_rmse=promised[0],
                backtest_coverage=promised[1],
            )
        )
    return found


def drift(forecasts: Sequence[ScoredForecast], figures: Sequence[LiveHorizon]) -> Drift:
    """The drift state of scored forecasts and their figures (see the module's rules)."""
    if not forecasts:
        return Drift("none")
    signals = []
    for f in figures:
        if f.coverage is None or not f.coverage_band or f.coverage >= f.coverage_band[0]:
            continue
        signals.append(
            DriftSignal(
                f.horizon,
                "coverage",
                f"{f.horizon} month(s) ahead the interval held {f.inside} of {f.intervals} "
                f"({f.coverage:.0%}), below the {BAND:.0%} band of an {LEVEL:.0%} interval "
                f"({f.coverage_band[0]:.0%} to {f.coverage_band[1]:.0%})",
            )
        )
    one = sorted((f for f in forecasts if f.horizon == 1), key=lambda f: f.month)[-MISSES:]
    if len(one) == MISSES and all(f.inside is False for f in one):
        months = ", ".join(f.month for f in one)
        signals.append(
            DriftSignal(
                1,
                "misses",
                f"the last {MISSES} one-month forecasts ({months}) all fell "
                "outside their intervals",
            )
        )
    return Drift("drift" if signals else "ok", signals)


def summary(state: Drift) -> str:
    """One line for people: the state and, when drifting, why."""
    if state.state == "none":
        return "no forecast scored yet"
    if state.state == "ok":
        return "ok: live errors are within what the backtest promised"
    return "drift: " + "; ".join(s.message for s in state.signals)
