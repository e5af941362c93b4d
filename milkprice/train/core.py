"""The pure part of a training run: raw bytes in; models, figures and a decision out.

Nothing here touches the bucket, so the CLI's evaluate runs exactly what the train function
runs. :func:`train` goes stage by stage, each a function of its own: score every candidate on
the backtest, choose the served models, export them (fit, ONNX and skops, verified against
each other), calibrate the forecast's interval, draw the report, and assemble the candidates
table the manifest keeps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import msgspec
import pandas as pd

from milkprice import contract, tracing
from milkprice.contract import (
    BacktestInfo,
    CandidateFigures,
    ForecastPath,
    HorizonFigures,
    HorizonMetrics,
    HorizonView,
    LongMetrics,
    Metrics,
    ModelEntry,
    NextRow,
    PathMonth,
)
from milkprice.errors import ConfigError, DataError
from milkprice.settings import Settings
from milkprice.train import artifacts, data, horizons, report
from milkprice.train import features as F
from milkprice.train import metrics as train_metrics
from milkprice.train.backtest import Backtest, backtest, fit_final, training_rows, unscorable, view
from milkprice.train.candidates import Candidate, candidates
from milkprice.train.intervals import INTERVAL_LEVEL, conformal_interval, rolling_bounds


class Timer:
    """Times each stage; ``on_stage`` hears when one starts (the run record shows progress).

    Every stage is also a span of the run's trace (when spans are exported) and one
    observation of the stage-duration histogram: one place, so the record, the trace and the
    metrics can never disagree on what a stage took."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.on_stage = on_stage

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.on_stage:
            self.on_stage(stage)
        start = time.perf_counter()
        try:
            with tracing.span(stage, **{"milkprice.stage": stage}):
                yield
        finally:
            took = time.perf_counter() - start
            self.seconds[stage] = round(took, 3)
            train_metrics.get().stages.labels(stage).observe(took)


BACKTEST_METHOD = "rolling origin, expanding window, one step ahead, refit each month"
INTERVAL_METHOD = "split conformal on relative one-step-ahead errors, rolling window"


@dataclass
class Trained:
    """What training made, before anything is written: the manifest's pieces already in the
    contract's types, so the run only adds what the bucket gives (digests, inputs)."""

    files: dict[str, bytes]
    served: dict[str, ModelEntry]  # role -> its manifest entry (sha256 left to the writer)
    candidates: list[CandidateFigures]
    backtest: BacktestInfo  # the months the models were chosen on, the long view's, the files
    next_row: NextRow
    cleaning: dict[str, dict[str, int]]
    promote: bool
    reason: str
    path: ForecastPath | None = None  # the forecast path and its backtest per horizon


@dataclass(frozen=True)
class Months:
    """The months a run works on."""

    scored: pd.PeriodIndex  # the backtest the served models are chosen on
    long: pd.PeriodIndex  # the long view: never shorter than ``scored``, which ends it
    target: pd.Period  # the month the served forecast is for


@dataclass
class Scores:
    """Every candidate's backtest, and why some had none."""

    every: list[Candidate]  # the catalogue, each candidate once, in its order
    scored: list[Candidate]  # those with enough history to backtest
    pools: dict[str, list[Candidate]]  # role -> its scored candidates
    notes: dict[str, str]  # name -> why it was not scored
    results: dict[str, Backtest]  # on the scored months
    long_results: dict[str, Backtest]  # on the long view, for candidates it adds months to


def train(raw: dict[str, bytes], settings: Settings, timer: Timer, today: date) -> Trained:
    """Everything a run makes from the raw files, stage by stage, each stage timed."""
    with timer("clean"):
        clean = data.clean(raw, F.REQUIRED_MACRO, today)
    with timer("features"):
        frame = F.build(clean)
        scored = F.evaluation_months(frame, settings.backtest_months)
        target = F.next_month(frame)
    months = _months(frame, settings, scored, target)
    scores = score(frame, months, timer, chosen_names(settings.candidates))
    naive = _metrics(scores.results["naive"].metrics)
    chosen, passed_over = choose(frame, scores, months.target)
    notes = {**scores.notes, **passed_over}
    if "forecast" not in chosen:
        raise DataError(data.MILK, f"no candidate can forecast {months.target}: {notes}")
    files, served = export(frame, chosen, scores.results, naive, months.target, timer)
    forecast = chosen["forecast"]
    next_values = frame.loc[months.target, list(forecast.features)]
    next_row = NextRow(str(months.target), {k: float(v) for k, v in next_values.items()})
    interval, calibration = calibrate(frame, forecast, scores, months, timer)
    long_view = _long_view(scores.long_results)
    served["forecast"] = msgspec.structs.replace(
        served["forecast"], interval=interval, backtest_long=long_view.get(forecast.name)
    )
    files.update(report_files(frame, scores, months, chosen, calibration, timer))
    path, path_files = forecast_path(frame, months, settings.horizon, timer)
    files.update(path_files)
    promote, reason = decide(forecast, scores.results, naive)
    backtest_info = BacktestInfo(
        months=[str(m) for m in months.scored],
        method=BACKTEST_METHOD,
        table="backtest.csv",
        chart="backtest.png",
        long_months=[str(m) for m in months.long] if scores.long_results else [],
    )
    return Trained(
        path=path,
        files=files,
        served=served,
        candidates=candidate_table(scores, notes, long_view),
        backtest=backtest_info,
        next_row=next_row,
        cleaning=clean.counts,
        promote=promote,
        reason=reason,
    )


def _metrics(figures: dict[str, float]) -> Metrics:
    """A backtest's figures as the contract holds them."""
    return Metrics(rmse=figures["rmse"], mae=figures["mae"], mape=figures["mape"])


def _months(
    frame: pd.DataFrame, settings: Settings, scored: pd.PeriodIndex, target: pd.Period
) -> Months:
    """The run's months; too short a history for the backtest asked for is a data error."""
    if len(scored) < settings.backtest_months:
        raise DataError(
            data.MACRO,
            f"only {len(scored)} months are covered by all three files; the backtest needs "
            f"{settings.backtest_months}",
        )
    long = F.evaluation_months(frame, max(settings.long_backtest_months, len(scored)))
    return Months(scored, long, target)


# ---------------------------------------------------------------- score and choose


def chosen_names(setting: str) -> frozenset[str] | None:
    """The candidates ``MILKPRICE_CANDIDATES`` names (None: all of them); naive is always
    among them, since every figure is judged against it. An unknown name is a ConfigError
    that lists the catalogue."""
    names = frozenset(n.strip() for n in setting.split(",") if n.strip())
    if not names:
        return None
    known = [c.name for c in {c.name: c for p in candidates().values() for c in p}.values()]
    unknown = sorted(names - set(known))
    if unknown:
        raise ConfigError(
            f"MILKPRICE_CANDIDATES names no candidate {', '.join(unknown)}; "
            f"the candidates are {', '.join(known)}"
        )
    return names | {"naive"}


def score(
    frame: pd.DataFrame, months: Months, timer: Timer, only: frozenset[str] | None = None
) -> Scores:
    """Backtest every candidate that has the history (of ``only``, when given), each once,
    on both views."""
    pools, notes = candidates(), {}
    if only is not None:
        pools = {role: [c for c in pool if c.name in only] for role, pool in pools.items()}
    every = list({c.name: c for pool in pools.values() for c in pool}.values())
    for c in every:  # a candidate whose features are too recent to train on is left out
        why = unscorable(frame, c, months.scored[0])
        if why:
            notes[c.name] = f"not scored: {why}"
    scored = [c for c in every if c.name not in notes]
    pools = {role: [c for c in pool if c.name not in notes] for role, pool in pools.items()}
    results: dict[str, Backtest] = {}
    long_results: dict[str, Backtest] = {}
    with timer("backtest"):
        for i, candidate in enumerate(scored, start=1):
            if timer.on_stage:  # progress for whoever watches the run record
                timer.on_stage(f"backtest {i}/{len(scored)}: {candidate.name}")
            # one run over the long view gives the short one too: a month's forecast only
            # depends on the months before it
            span = months.scored if unscorable(frame, candidate, months.long[0]) else months.long
            full = backtest(frame, candidate, span)
            results[candidate.name] = view(frame, full, months.scored)
            if len(span) > len(months.scored):
                long_results[candidate.name] = full
    return Scores(every, scored, pools, notes, results, long_results)


def _eligible(frame: pd.DataFrame, candidate: Candidate, month: pd.Period) -> str | None:
    """Why a candidate cannot forecast ``month`` (a feature unknown then), or None."""
    row = frame.loc[month, list(candidate.features)]
    missing = [str(c) for c in row.index[row.isna()]]
    return f"no value of {missing[0]} for {month}" if missing else None


def choose(
    frame: pd.DataFrame, scores: Scores, target: pd.Period
) -> tuple[dict[str, Candidate], dict[str, str]]:
    """Each pool's candidate of lowest backtest RMSE, and why better ones were passed over.

    Only the forecast model must score the next month's row the manifest carries, so only it
    skips candidates with a feature still unknown for ``target``; the legacy model scores the
    rows its clients send. A forecast pool with no eligible candidate gets no entry.
    """
    chosen: dict[str, Candidate] = {}
    passed_over: dict[str, str] = {}
    for role, pool in scores.pools.items():
        ranked = sorted(pool, key=lambda c: scores.results[c.name].metrics["rmse"])
        if role != "forecast":
            chosen[role] = ranked[0]
            continue
        for c in ranked:
            why = _eligible(frame, c, target)
            if why:
                passed_over[c.name] = why
                continue
            chosen[role] = c
            break
    return chosen, passed_over


# ---------------------------------------------------------------- export and calibrate


def export(
    frame: pd.DataFrame,
    chosen: dict[str, Candidate],
    results: dict[str, Backtest],
    naive: Metrics,
    target: pd.Period,
    timer: Timer,
) -> tuple[dict[str, bytes], dict[str, ModelEntry]]:
    """Fit each chosen candidate on every known month and export it, ONNX to serve and skops
    to keep; a copy that predicts other numbers than the fitted model stops the run."""
    files: dict[str, bytes] = {}
    served: dict[str, ModelEntry] = {}
    for role, candidate in chosen.items():
        with timer(f"fit_{role}"):
            fitted, n_rows = fit_final(frame, candidate)
        with timer(f"export_{role}"):
            rows = training_rows(frame, candidate, target)
            X = rows[list(candidate.features)].to_numpy(float)
            onnx_bytes = artifacts.to_onnx(fitted, X.shape[1])
            skops_bytes = artifacts.to_skops(fitted)
            gap = artifacts.verify(fitted, onnx_bytes, skops_bytes, X)
        files[f"{role}.onnx"] = onnx_bytes
        files[f"{role}.skops"] = skops_bytes
        served[role] = ModelEntry(
            candidate=candidate.name,
            description=candidate.description,
            features=list(candidate.features),
            onnx=f"{role}.onnx",
            skops=f"{role}.skops",
            training_rows=int(n_rows),
            training_months=[str(rows.index.min()), str(rows.index.max())],
            backtest=_metrics(results[candidate.name].metrics),
            naive=naive,
            export_gap=float(gap),
        )
    return files, served


def calibrate(
    frame: pd.DataFrame, forecast: Candidate, scores: Scores, months: Months, timer: Timer
) -> tuple[contract.Interval, Backtest]:
    """The forecast's interval as the manifest describes it, and the backtest it came from.

    The long view's forecasts are reused: the calibration months before the scored ones are
    mostly among them already.
    """
    with timer("interval"):
        prior = scores.long_results.get(forecast.name, scores.results[forecast.name])
        interval, calibration = conformal_interval(
            frame, forecast, months.scored, prior.predictions
        )
    entry = contract.Interval(
        level=float(INTERVAL_LEVEL),
        lower_ratio=float(interval.lower),
        upper_ratio=float(interval.upper),
        coverage=float(interval.coverage),
        scored_months=int(interval.scored),
        calibration_months=int(interval.calibration),
        method=INTERVAL_METHOD,
    )
    return entry, calibration


def forecast_path(
    frame: pd.DataFrame, months: Months, horizon: int, timer: Timer
) -> tuple[ForecastPath | None, dict[str, bytes]]:
    """The path of the next ``horizon`` months and its backtest per horizon, on both views
    (None when the history is too short to choose a single month of it)."""
    with timer("horizons"):
        result = horizons.run(frame[F.TARGET], months.long[0], horizon)
        months_path = horizons.path(result)
        if not months_path:
            return None, {}
        longer = len(months.long) > len(months.scored)
        doc = ForecastPath(
            level=float(horizons.LEVEL),
            method=horizons.METHOD,
            models={m.name: m.description for m in horizons.path_models()},
            months=[_path_month(m) for m in months_path],
            short=_horizon_view(horizons.view(result, months.scored, horizon)),
            long=_horizon_view(horizons.view(result, months.long, horizon)) if longer else None,
            history={str(m): float(v) for m, v in frame[F.TARGET].dropna()[-36:].items()},
            table="horizons.csv",
            seconds=round(float(result.seconds), 3),
        )
        csv = report.to_csv(horizons.table(result, months.long).set_index("month"))
    return doc, {"horizons.csv": csv}


def _path_month(m: dict[str, Any]) -> PathMonth:
    return PathMonth(
        month=str(m["month"]),
        horizon=int(m["horizon"]),
        price=float(m["price"]),
        lower=float(m["lower"]),
        upper=float(m["upper"]),
    )


def _horizon_metrics(m: dict[str, Any]) -> HorizonMetrics:
    band = m.get("coverage_band")
    return HorizonMetrics(
        rmse=float(m["rmse"]),
        mae=float(m["mae"]),
        mape=float(m["mape"]),
        rmse_to_naive=float(m["rmse_to_naive"]),
        coverage=None if m.get("coverage") is None else float(m["coverage"]),
        coverage_band=None if band is None else (float(band[0]), float(band[1])),
    )


def _horizon_view(view: dict[str, Any]) -> HorizonView:
    """The horizon backtest's figures on one view (numbers from ``horizons``) in the
    contract's types: the path's, the naive forecast's and every path model's."""
    return HorizonView(
        months=[str(m) for m in view["months"]],
        horizons=[
            HorizonFigures(
                horizon=int(h["horizon"]),
                scored=int(h["scored"]),
                path=_horizon_metrics(h["path"]),
                naive=_horizon_metrics(h["naive"]),
                models={name: _horizon_metrics(f) for name, f in h["models"].items()},
            )
            for h in view["horizons"]
        ],
    )


# ---------------------------------------------------------------- report and decide


def report_files(
    frame: pd.DataFrame,
    scores: Scores,
    months: Months,
    chosen: dict[str, Candidate],
    calibration: Backtest,
    timer: Timer,
) -> dict[str, bytes]:
    """The backtest table and chart: every candidate's forecasts over the longest view, the
    forecast model's rolling interval, and which months the models were chosen on."""
    with timer("report"):
        shown = months.long if scores.long_results else months.scored
        actual = frame.loc[shown, F.TARGET]
        table = report.backtest_table(
            actual,
            {n: scores.long_results.get(n, r).predictions for n, r in scores.results.items()},
        )
        point = table[chosen["forecast"].name]
        bounds = rolling_bounds(frame, calibration.predictions, pd.PeriodIndex(shown))
        table["forecast_lower"] = point * (1 + bounds["lower"].to_numpy())
        table["forecast_upper"] = point * (1 + bounds["upper"].to_numpy())
        table["selection"] = pd.PeriodIndex(shown).isin(months.scored).astype(int)
        return {
            "backtest.csv": report.to_csv(table),
            "backtest.png": report.chart(table, {role: c.name for role, c in chosen.items()}),
        }


def decide(forecast: Candidate, results: dict[str, Backtest], naive: Metrics) -> tuple[bool, str]:
    """Promote only a forecast model that beats the naive forecast on the backtest."""
    best = results[forecast.name].metrics["rmse"]
    promote = forecast.name != "naive" and best < naive.rmse
    reason = (
        f"one-step forecast model {forecast.name} has backtest RMSE {best:.3f} against the naive "
        f"forecast's {naive.rmse:.3f}"
    )
    if not promote:
        reason = f"not better than the naive forecast: {reason}"
    return promote, reason


def candidate_table(
    scores: Scores, notes: dict[str, str], long_view: dict[str, LongMetrics]
) -> list[CandidateFigures]:
    """The manifest's candidates: each scored one's figures, then why the others have none."""
    scored = [
        CandidateFigures(
            name=c.name,
            description=c.description,
            features=len(c.features),
            pools=[role for role, pool in scores.pools.items() if c in pool],
            rmse=scores.results[c.name].metrics["rmse"],
            mae=scores.results[c.name].metrics["mae"],
            mape=scores.results[c.name].metrics["mape"],
            seconds=round(float(scores.results[c.name].seconds), 3),
            long=long_view.get(c.name),
            not_eligible=notes.get(c.name),
        )
        for c in scores.scored
    ]
    return scored + [
        CandidateFigures(name=c.name, description=c.description, features=len(c.features), note=why)
        for c in scores.every
        if (why := notes.get(c.name)) and c.name not in scores.results
    ]


def _long_view(results: dict[str, Backtest]) -> dict[str, LongMetrics]:
    """Every candidate's metrics on the long view, beside the naive forecast's ratio."""
    if "naive" not in results:
        return {}
    naive = results["naive"].metrics["rmse"]
    return {
        name: LongMetrics(
            rmse=r.metrics["rmse"],
            mae=r.metrics["mae"],
            mape=r.metrics["mape"],
            scored=len(r.predictions),
            months=[str(r.predictions.index[0]), str(r.predictions.index[-1])],
            rmse_to_naive=r.metrics["rmse"] / naive,
        )
        for name, r in results.items()
    }
