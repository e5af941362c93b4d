"""The forecast ledger: every served forecast scored against the price that arrived.

Each training run, once it has read the raw files, scores the forecasts of earlier promoted
versions whose months the price file now covers, and writes ``ledger/forecasts.json`` by
compare-and-swap (:func:`step`). The rules:

* **What a version forecast.** A version's forecasts are its manifest's path: month ``M`` at
  horizon ``h`` is ``h`` months after the version's last price. A version trained before the
  path forecast one month, horizon 1: its forecast model's price of ``manifest.next``'s row
  (the ONNX graph, as the predict function computes it) with the model's interval.
* **Served.** A version counts only if it was served: the pointer's history
  (``models/history.json``, appended at every promotion and rollback), the promotions of the
  run records (read when the ledger is first built, for the time before the history), and
  the pointer itself. A version never promoted forecast nothing anyone was told.
* **One forecast per month and horizon.** Versions with the same last price month forecast
  the same months at the same horizons (a retraining on unchanged data, a rollback). Of
  those, the one promoted last counts: it is what users were told last, up to when newer
  data replaced it. A rollback is a promotion like any other.
* **Append-only.** A (month, horizon) scored once is never rewritten. The actual is the
  price first read for the month; when a later raw file has another price for a scored
  month, a :class:`~milkprice.contract.Revision` records it and the entries keep theirs.
  The figures are over the entries as scored. The naive forecast of (M, h) is the last price
  at or before M - h in the raw file that scored it.
* **First run.** Without a ledger, the archived price files the run records name are
  replayed in the order the runs read them, each with only the promotions made before that
  run started, then the current file: the ledger the system would have kept all along,
  revisions included.

Scoring never stops a run: a failure is recorded in the run record (``ledger.error``), and
the next run scores whatever this one missed, since entries are keyed by month and horizon.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from milkprice import accuracy, contract
from milkprice.contract import (
    Ledger,
    LedgerStep,
    Manifest,
    Pointer,
    Revision,
    RunRecord,
    ScoredForecast,
    Served,
    Span,
)
from milkprice.errors import DataError, MilkPriceError
from milkprice.settings import Settings
from milkprice.train import artifacts, data
from milkprice.train.core import Timer

log = logging.getLogger("milkprice.train")

MILK = contract.raw_path(data.MILK)
Prices = dict[str, float]  # month -> price


@dataclass(frozen=True)
class Forecast:
    """One month a version forecast, as it was served."""

    month: str
    horizon: int
    price: float
    lower: float | None
    upper: float | None
    level: float | None
    source: str


@dataclass(frozen=True)
class Reading:
    """One price file to score with: its prices, when it was read, by which run."""

    prices: Prices
    when: str
    run_id: str
    token: str
    before: str | None = None  # only promotions up to this time count (None: all)


# ---------------------------------------------------------------- a version's forecasts


def forecasts(settings: Settings, manifest: Manifest) -> list[Forecast]:
    """What ``manifest``'s version served: its path, or its forecast model's next month."""
    if manifest.path is not None:
        level = manifest.path.level
        return [
            Forecast(m.month, m.horizon, m.price, m.lower, m.upper, level, "path")
            for m in manifest.path.months
        ]
    one = _model_forecast(settings, manifest)
    return [] if one is None else [one]


def _model_forecast(settings: Settings, manifest: Manifest) -> Forecast | None:
    """The forecast model's price of the next row (the ONNX graph the predict function
    serves, checked against the manifest's sha256), with the model's interval."""
    entry = manifest.models.get("forecast")
    if entry is None:
        return None
    graph = contract.read_artifact(settings, manifest.version, entry.onnx)
    if graph is None or artifacts.sha256(graph) != entry.sha256.get(entry.onnx):
        return None  # a version the predict function could not have loaded
    row = np.array([[manifest.next.features[f] for f in entry.features]], dtype=np.float64)
    price = float(artifacts.onnx_predict(graph, row)[0])
    band = entry.interval
    if band is None:
        return Forecast(manifest.next.month, 1, price, None, None, None, "model")
    low, high = price * (1 + band.lower_ratio), price * (1 + band.upper_ratio)
    return Forecast(manifest.next.month, 1, price, low, high, band.level, "model")


def span(manifest: Manifest) -> Span:
    """The version's last price month and how far ahead it forecast, from its manifest."""
    if manifest.path is not None:
        if not manifest.path.months:
            return Span("", 0)
        first = manifest.path.months[0]
        end = accuracy.add_months(first.month, -first.horizon)
        return Span(end, max(m.horizon for m in manifest.path.months))
    return Span(accuracy.add_months(manifest.next.month, -1), 1)


# ---------------------------------------------------------------- who served when


def run_promotions(records: Iterable[RunRecord]) -> list[Served]:
    """The promotions run records tell of (their finish time, just after the pointer moved)."""
    return [
        Served(r.version, r.run_id, r.finished, "run")
        for r in records
        if r.outcome == "promoted" and r.version and r.finished
    ]


def timeline(known: list[Served], pointers: Iterable[Pointer], runs: list[Served]) -> list[Served]:
    """Every promotion, oldest first: what the ledger knew, the pointer's moves, then the
    run records' (a run's promotion once: the pointer's time wins over the record's)."""
    events = [
        *known,
        *(Served(p.version, p.run_id, p.promoted) for p in pointers),
        *runs,
    ]
    from_pointer = {e.run_id for e in events if e.source == "pointer"}
    seen: set[tuple[str, str, str]] = set()
    merged = []
    for e in events:
        key = (e.version, e.run_id, e.promoted)
        if key in seen or (e.source == "run" and e.run_id in from_pointer):
            continue
        seen.add(key)
        merged.append(e)
    return sorted(merged, key=lambda e: e.promoted)  # stable: same-second moves keep order


def winners(events: list[Served], spans: dict[str, Span], before: str | None) -> dict[str, Served]:
    """For each last price month, the promotion that counts: the last one (up to ``before``)
    of a version with that month."""
    found: dict[str, Served] = {}
    for e in events:
        if before is not None and e.promoted > before:
            break
        s = spans.get(e.version)
        if s is not None and s.horizons:
            found[s.end] = e
    return found


# ---------------------------------------------------------------- scoring


@dataclass
class Versions:
    """Manifests read in one update, each once."""

    settings: Settings
    manifests: dict[str, Manifest | None] = field(default_factory=dict)
    served: dict[str, list[Forecast]] = field(default_factory=dict)

    def manifest(self, version: str) -> Manifest | None:
        if version not in self.manifests:
            try:
                self.manifests[version] = contract.read_manifest(self.settings, version)
            except MilkPriceError as exc:  # missing or not the contract: it forecast nothing
                log.warning("ledger: version %s unreadable: %s", version, exc.message)
                self.manifests[version] = None
        return self.manifests[version]

    def forecasts(self, version: str) -> list[Forecast]:
        if version not in self.served:
            m = self.manifest(version)
            self.served[version] = [] if m is None else forecasts(self.settings, m)
        return self.served[version]

    def spans(self, events: list[Served], known: dict[str, Span]) -> dict[str, Span]:
        """``known`` plus the span of every version of ``events`` not in it yet (a version
        whose manifest is missing is tried again next time)."""
        found = dict(known)
        for e in events:
            if e.version not in found and (m := self.manifest(e.version)) is not None:
                found[e.version] = span(m)
        return found


def _naive(prices: Prices, month: str) -> float | None:
    """The last price at or before ``month``."""
    known = [m for m in prices if m <= month]
    return prices[max(known)] if known else None


def score(
    doc: Ledger, reading: Reading, events: list[Served], spans: dict[str, Span], v: Versions
) -> tuple[list[ScoredForecast], list[Revision]]:
    """The entries and revisions ``reading`` adds to ``doc``."""
    done = {(f.month, f.horizon) for f in doc.forecasts}
    added: list[ScoredForecast] = []
    for end, event in sorted(winners(events, spans, reading.before).items()):
        s = spans[event.version]
        due = [
            h
            for h in range(1, s.horizons + 1)
            if (m := accuracy.add_months(end, h)) in reading.prices and (m, h) not in done
        ]
        if not due:
            continue  # read the manifest only when it has something to score
        for f in v.forecasts(event.version):
            if f.horizon in due:
                entry = _entry(f, event, reading)
                if entry is not None:
                    added.append(entry)
                    done.add((f.month, f.horizon))
    return added, _revisions([*doc.forecasts, *added], doc.revisions, reading)


def _entry(f: Forecast, event: Served, reading: Reading) -> ScoredForecast | None:
    actual = reading.prices[f.month]
    naive = _naive(reading.prices, accuracy.add_months(f.month, -f.horizon))
    if naive is None or not math.isfinite(f.price):
        return None
    inside = None if f.lower is None or f.upper is None else f.lower <= actual <= f.upper
    return ScoredForecast(
        month=f.month,
        horizon=f.horizon,
        version=event.version,
        promoted=event.promoted,
        source="path" if f.source == "path" else "model",
        price=f.price,
        actual=actual,
        naive=naive,
        error=f.price - actual,
        lower=f.lower,
        upper=f.upper,
        level=f.level,
        inside=inside,
        scored=reading.when,
        run_id=reading.run_id,
    )


def _revisions(
    entries: list[ScoredForecast], earlier: list[Revision], reading: Reading
) -> list[Revision]:
    """A revision for every scored month whose price in ``reading`` is not the last known."""
    known: dict[str, float] = {}
    for f in entries:
        known.setdefault(f.month, f.actual)
    for r in earlier:
        known[r.month] = r.actual
    return [
        Revision(month, before, reading.prices[month], reading.when, reading.run_id, reading.token)
        for month, before in sorted(known.items())
        if month in reading.prices and abs(reading.prices[month] - before) > 1e-9
    ]


def add(
    doc: Ledger,
    entries: list[ScoredForecast],
    revisions: list[Revision],
    served: list[Served],
    spans: dict[str, Span],
    run_id: str,
    backtest: dict[int, tuple[float | None, float | None]] | None = None,
) -> Ledger:
    """``doc`` with new entries (a month and horizon it has already are left as they are),
    revisions, promotions and spans, and its figures and drift computed again."""
    done = {(f.month, f.horizon) for f in doc.forecasts}
    fresh = [f for f in entries if (f.month, f.horizon) not in done]
    every = sorted([*doc.forecasts, *fresh], key=lambda f: (f.month, f.horizon))
    figures = accuracy.horizon_figures(every, backtest)
    return Ledger(
        forecasts=every,
        revisions=[*doc.revisions, *revisions],
        horizons=figures,
        drift=accuracy.drift(every, figures),
        served=served,
        spans=spans,
        updated=contract.now(),
        run_id=run_id,
        write_id=uuid.uuid4().hex,
    )


# ---------------------------------------------------------------- a run's step


def prices_of(milk: bytes, today: date) -> Prices:
    """The price file as training cleans it, month -> price."""
    series, _ = data.clean_milk(milk, today)
    return {str(m): float(p) for m, p in series.items()}


def _past(settings: Settings, run_id: str, today: date) -> tuple[list[Served], list[Reading]]:
    """For a first build: the run records' promotions, and every archived price file they
    name, in the order the runs read them, each with the promotions before that run began."""
    records = contract.list_runs(settings)
    readings: list[Reading] = []
    seen: set[str] = set()
    for r in records:
        found = r.inputs.get(MILK)
        if r.run_id == run_id or found is None or not found.archive or found.token in seen:
            continue
        seen.add(found.token)
        milk = contract.read_archived(settings, found.archive)
        try:
            prices = prices_of(milk, today) if milk is not None else None
        except DataError:
            prices = None  # a file that failed its run then: it told nobody anything
        if prices:
            readings.append(Reading(prices, r.started, r.run_id, found.token, r.started))
    return run_promotions(records), readings


def _promised(events: list[Served], v: Versions) -> dict[int, tuple[float | None, float | None]]:
    """What the newest served version's backtest promised per horizon: RMSE and coverage."""
    m = v.manifest(events[-1].version) if events else None
    if m is None:
        return {}
    if m.path is not None:
        return {h.horizon: (h.path.rmse, h.path.coverage) for h in m.path.short.horizons}
    model = m.models.get("forecast")
    if model is None:
        return {}
    return {1: (model.backtest.rmse, model.interval.coverage if model.interval else None)}


def update(settings: Settings, milk: bytes, token: str, run_id: str, today: date) -> LedgerStep:
    """Score every forecast the price file ``milk`` settles, and write the ledger."""
    prices = prices_of(milk, today)
    pointer = contract.read_pointer(settings)
    pointers = [*contract.read_history(settings).events, *([pointer[0]] if pointer else [])]
    v = Versions(settings)
    past: tuple[list[Served], list[Reading]] | None = None
    step = LedgerStep()

    def change(doc: Ledger) -> Ledger | None:
        nonlocal past
        if not doc.updated and past is None:  # no ledger yet: the archive's history first
            past = _past(settings, run_id, today)
        runs, readings = past if not doc.updated and past else ([], [])
        events = timeline(doc.served, pointers, runs)
        spans = v.spans(events, doc.spans)
        now = Reading(prices, contract.now(), run_id, token)
        so_far = Ledger(forecasts=list(doc.forecasts), revisions=list(doc.revisions))
        for reading in [*readings, now]:
            entries, revisions = score(so_far, reading, events, spans, v)
            so_far.forecasts += entries
            so_far.revisions += revisions
        entries = so_far.forecasts[len(doc.forecasts) :]
        revisions = so_far.revisions[len(doc.revisions) :]
        step.scored, step.revised, step.drift = len(entries), len(revisions), doc.drift
        if not entries and not revisions and events == doc.served and spans == doc.spans:
            return None
        return add(doc, entries, revisions, events, spans, run_id, _promised(events, v))

    written = contract.update(settings, contract.LEDGER, Ledger, change)
    if written is not None:
        step.drift = written.drift
    return step


def step(
    settings: Settings, raw: contract.Blob, record: RunRecord, timer: Timer, today: date
) -> None:
    """The run's ledger step, timed as ``ledger``: its outcome goes into the run record, and
    whatever goes wrong stays there: the run trains and promotes all the same (the ledger is
    a report on earlier forecasts, and the next run scores what this one missed)."""
    with timer("ledger"):
        try:
            record.ledger = update(settings, raw.data, raw.token, record.run_id, today)
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            record.ledger = LedgerStep(error=message)
            log.warning(
                "run %s: the forecast ledger was not updated: %s",
                record.run_id,
                message,
                exc_info=None if isinstance(exc, MilkPriceError) else exc,
                extra={"run_id": record.run_id},
            )
            return
    if record.ledger.scored or record.ledger.revised:
        log.info(
            "run %s: scored %d served forecasts, %d revised prices; %s",
            record.run_id,
            record.ledger.scored,
            record.ledger.revised,
            accuracy.summary(record.ledger.drift or contract.Drift()),
            extra={"run_id": record.run_id},
        )


def drift_state(settings: Settings) -> contract.Drift:
    """The drift state as the ledger holds it now (for a metric, an alert, the CLI)."""
    return contract.read_ledger(settings)[0].drift
