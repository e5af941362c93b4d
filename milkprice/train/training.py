"""One training run: raw files in the bucket become a backtested, verified, promoted model.

Order matters for what a reader of the bucket can see: the raw generations are archived first,
every artifact is written and read back against its sha256 before the manifest, and the
pointer moves last, with a generation precondition, so it never names a missing or partial
model and two runs can never both promote blindly. Whatever happens, a run record is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from milkprice import store
from milkprice.errors import Conflict, DataError, MilkPriceError
from milkprice.settings import Settings
from milkprice.train import artifacts, data, report
from milkprice.train import features as F
from milkprice.train import model as M

log = logging.getLogger("milkprice.train")

TRIGGERS = ("schedule", "http", "upload")
STALE_CLAIM = timedelta(minutes=30)
LIBRARIES = ("numpy", "pandas", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "skops")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class Inputs:
    blobs: dict[str, store.Blob]

    @property
    def generations(self) -> dict[str, int]:
        return {name: blob.generation for name, blob in self.blobs.items()}

    @property
    def key(self) -> str:
        """Identifies the set of raw generations: the same set never trains twice by event."""
        text = ",".join(f"{n}@{g}" for n, g in sorted(self.generations.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_inputs(settings: Settings) -> Inputs:
    blobs = {}
    for name in data.RAW_FILES:
        path = store.RAW_PREFIX + name
        found = store.size(settings, path)
        if found is None:
            raise DataError(name, f"not found at gs://{settings.bucket}/{path}")
        size, generation = found
        if size > settings.max_raw_bytes:
            raise DataError(
                name,
                f"is {size / 1e6:.1f} MB, more than the {settings.max_raw_bytes / 1e6:.1f} MB "
                "a raw file may have (MILKPRICE_MAX_RAW_BYTES)",
            )
        blob = store.read(settings, path, generation)
        if blob is None:
            raise DataError(name, f"gs://{settings.bucket}/{path} changed while being read")
        blobs[name] = blob
    return Inputs(blobs)


class Timer:
    """Times each stage; ``on_stage`` hears when one starts (the run record shows progress)."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.on_stage = on_stage

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.on_stage:
            self.on_stage(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 3)


# ---------------------------------------------------------------- the pure part


@dataclass
class Trained:
    """What training made, before anything is written."""

    files: dict[str, bytes]
    served: dict[str, dict[str, Any]]  # role -> its manifest entry (without sha256)
    candidates: list[dict[str, Any]]
    backtest_months: list[str]
    long_months: list[str]  # the long view's months (empty when it adds none)
    next_row: dict[str, Any]
    cleaning: dict[str, dict[str, int]]
    promote: bool
    reason: str


def _eligible(frame: pd.DataFrame, candidate: M.Candidate, month: pd.Period) -> str | None:
    """Why a candidate cannot forecast ``month`` (a feature unknown then), or None."""
    row = frame.loc[month, list(candidate.features)]
    missing = [str(c) for c in row.index[row.isna()]]
    return f"no value of {missing[0]} for {month}" if missing else None


def train(raw: dict[str, bytes], settings: Settings, timer: Timer, today: date) -> Trained:
    with timer("clean"):
        clean = data.clean(raw, F.REQUIRED_MACRO, today)
    with timer("features"):
        frame = F.build(clean)
        months = F.evaluation_months(frame, settings.backtest_months)
        target_month = F.next_month(frame)
    if len(months) < settings.backtest_months:
        raise DataError(
            data.MACRO,
            f"only {len(months)} months are covered by all three files; the backtest needs "
            f"{settings.backtest_months}",
        )
    long_months = F.evaluation_months(frame, max(settings.long_backtest_months, len(months)))
    pools, notes = M.candidates(), {}
    every = list({c.name: c for pool in pools.values() for c in pool}.values())
    for c in every:  # a candidate whose features are too recent to train on is left out
        why = M.unscorable(frame, c, months[0])
        if why:
            notes[c.name] = f"not scored: {why}"
    unique = [c for c in every if c.name not in notes]
    pools = {role: [c for c in pool if c.name not in notes] for role, pool in pools.items()}
    results: dict[str, M.Backtest] = {}
    long_results: dict[str, M.Backtest] = {}
    with timer("backtest"):
        for i, candidate in enumerate(unique, start=1):
            if timer.on_stage:  # progress for whoever watches the run record
                timer.on_stage(f"backtest {i}/{len(unique)}: {candidate.name}")
            # one run over the long view gives the short one too: a month's forecast only
            # depends on the months before it
            span = months if M.unscorable(frame, candidate, long_months[0]) else long_months
            full = M.backtest(frame, candidate, span)
            results[candidate.name] = M.view(frame, full, months)
            if len(span) > len(months):
                long_results[candidate.name] = full
    naive = results["naive"].metrics
    chosen: dict[str, M.Candidate] = {}
    for role, pool in pools.items():
        ranked = sorted(pool, key=lambda c: results[c.name].metrics["rmse"])
        if role == "forecast":
            for c in ranked:
                why = _eligible(frame, c, target_month)
                if why:
                    notes[c.name] = why
                    continue
                chosen[role] = c
                break
        else:
            chosen[role] = ranked[0]
    if "forecast" not in chosen:
        raise DataError(data.MILK, f"no candidate can forecast {target_month}: {notes}")
    files: dict[str, bytes] = {}
    served: dict[str, dict[str, Any]] = {}
    for role, candidate in chosen.items():
        with timer(f"fit_{role}"):
            fitted, n_rows = M.fit_final(frame, candidate)
        with timer(f"export_{role}"):
            rows = M.training_rows(frame, candidate, target_month)
            X = rows[list(candidate.features)].to_numpy(float)
            onnx_bytes = artifacts.to_onnx(fitted, X.shape[1])
            skops_bytes = artifacts.to_skops(fitted)
            gap = artifacts.verify(fitted, onnx_bytes, skops_bytes, X)
        files[f"{role}.onnx"] = onnx_bytes
        files[f"{role}.skops"] = skops_bytes
        served[role] = {
            "candidate": candidate.name,
            "description": candidate.description,
            "features": list(candidate.features),
            "onnx": f"{role}.onnx",
            "skops": f"{role}.skops",
            "training_rows": n_rows,
            "training_months": [str(rows.index.min()), str(rows.index.max())],
            "backtest": results[candidate.name].metrics,
            "naive": naive,
            "export_gap": gap,
        }
    forecast = chosen["forecast"]
    next_values = frame.loc[target_month, list(forecast.features)]
    next_row = {
        "month": str(target_month),
        "features": {k: float(v) for k, v in next_values.items()},
    }
    with timer("interval"):
        prior = long_results.get(forecast.name, results[forecast.name])
        interval, calibration = M.conformal_interval(frame, forecast, months, prior.predictions)
    served["forecast"]["interval"] = {
        "level": M.INTERVAL_LEVEL,
        "lower_ratio": interval.lower,
        "upper_ratio": interval.upper,
        "coverage": interval.coverage,
        "scored_months": interval.scored,
        "calibration_months": interval.calibration,
        "method": "split conformal on relative one-step-ahead errors, rolling window",
    }
    long_view = _long_view(long_results)
    if forecast.name in long_results:
        served["forecast"]["backtest_long"] = long_view[forecast.name]
    with timer("report"):
        shown = long_months if long_results else months
        actual = frame.loc[shown, F.TARGET]
        table = report.backtest_table(
            actual, {n: long_results.get(n, r).predictions for n, r in results.items()}
        )
        point = table[forecast.name]
        bounds = M.rolling_bounds(frame, calibration.predictions, pd.PeriodIndex(shown))
        table["forecast_lower"] = point * (1 + bounds["lower"].to_numpy())
        table["forecast_upper"] = point * (1 + bounds["upper"].to_numpy())
        table["selection"] = pd.PeriodIndex(shown).isin(months).astype(int)
        files["backtest.csv"] = report.to_csv(table)
        files["backtest.png"] = report.chart(table, {role: c.name for role, c in chosen.items()})
    best = results[forecast.name].metrics["rmse"]
    promote = forecast.name != "naive" and best < naive["rmse"]
    reason = (
        f"forecast model {forecast.name} has backtest RMSE {best:.3f} against the naive "
        f"forecast's {naive['rmse']:.3f}"
    )
    if not promote:
        reason = f"not better than the naive forecast: {reason}"
    candidates = [
        {
            "name": c.name,
            "description": c.description,
            "pools": [role for role, pool in pools.items() if c in pool],
            "features": len(c.features),
            **results[c.name].metrics,
            "seconds": round(results[c.name].seconds, 3),
            **({"long": long_view[c.name]} if c.name in long_view else {}),
            **({"not_eligible": notes[c.name]} if c.name in notes else {}),
        }
        for c in unique
    ] + [
        {"name": c.name, "description": c.description, "features": len(c.features), "note": why}
        for c in every
        if (why := notes.get(c.name)) and c.name not in results
    ]
    return Trained(
        files=files,
        served=served,
        candidates=candidates,
        backtest_months=[str(m) for m in months],
        long_months=[str(m) for m in long_months] if long_results else [],
        next_row=next_row,
        cleaning=clean.counts,
        promote=promote,
        reason=reason,
    )


# ---------------------------------------------------------------- the bucket part


def _long_view(results: dict[str, M.Backtest]) -> dict[str, dict[str, Any]]:
    """Every candidate's metrics on the long view, beside the naive forecast's ratio."""
    if "naive" not in results:
        return {}
    naive = results["naive"].metrics["rmse"]
    return {
        name: {
            "months": [str(r.predictions.index[0]), str(r.predictions.index[-1])],
            "scored": len(r.predictions),
            **r.metrics,
            "rmse_to_naive": r.metrics["rmse"] / naive,
        }
        for name, r in results.items()
    }


def _library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def _write_artifacts(settings: Settings, version: str, files: dict[str, bytes]) -> dict[str, str]:
    """Write and read back every file; return their sha256 once all are verified."""
    digests = {}
    for name, payload in files.items():
        kind = {"png": "image/png", "csv": "text/csv"}.get(name.rsplit(".", 1)[-1])
        store.write(
            settings, store.model_path(version, name), payload, kind or "application/octet-stream"
        )
        digests[name] = artifacts.sha256(payload)
    for name, digest in digests.items():
        back = store.read(settings, store.model_path(version, name))
        if back is None or artifacts.sha256(back.data) != digest:
            raise MilkPriceError(f"artifact {name} of {version} did not read back intact")
    return digests


def _claim(settings: Settings, inputs: Inputs, run_id: str) -> dict[str, Any] | None:
    """Claim the input set for an event-triggered run; the earlier run's record if taken."""
    name = f"{store.CLAIMS_PREFIX}{inputs.key}.json"
    doc = {"run_id": run_id, "started": now(), "inputs": inputs.generations}
    try:
        store.write_json(settings, name, doc, if_generation_match=0)
        return None
    except Conflict:
        pass
    found = store.read_json(settings, name)
    if found is None:
        return None
    claim, claim_generation = found
    earlier = store.read_json(settings, f"{store.RUNS_PREFIX}{claim['run_id']}.json")
    record = earlier[0] if earlier else {"run_id": claim["run_id"], "outcome": "running"}
    started = datetime.fromisoformat(claim["started"].replace("Z", "+00:00"))
    retry = (record.get("outcome") == "failed" and not record.get("error", {}).get("data")) or (
        record.get("outcome") == "running" and datetime.now(UTC) - started > STALE_CLAIM
    )
    if not retry:
        return dict(record)
    try:
        store.write_json(settings, name, doc, if_generation_match=claim_generation)
    except Conflict:
        return dict(record)
    return None


def run(
    settings: Settings,
    trigger: str,
    event: dict[str, Any] | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Train once and return the run record (also written to ``runs/<run-id>.json``)."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    run_id = new_run_id()
    record: dict[str, Any] = {
        "run_id": run_id,
        "trigger": trigger,
        "started": now(),
        "outcome": "running",
    }
    if event:
        record["event"] = event
    record_name = f"{store.RUNS_PREFIX}{run_id}.json"

    def progress(stage: str) -> None:
        record["stage"] = stage
        if "inputs" in record:  # i.e. once the run is past its skip check
            with contextlib.suppress(MilkPriceError):
                store.write_json(settings, record_name, record)

    timer = Timer(progress)
    started = time.perf_counter()
    log.info("run %s started (%s)", run_id, trigger, extra={"run_id": run_id, "trigger": trigger})
    try:
        with timer("read"):
            pointer = store.read_json(settings, store.POINTER)
            inputs = read_inputs(settings)
        record["inputs"] = {
            store.RAW_PREFIX + n: {"generation": b.generation, "sha256": artifacts.sha256(b.data)}
            for n, b in inputs.blobs.items()
        }
        if trigger == "upload":
            earlier = _claim(settings, inputs, run_id)
            if earlier is not None:
                record.update(
                    outcome="skipped",
                    reason=f"run {earlier['run_id']} already took these raw generations",
                    earlier=earlier,
                )
                return record
        with timer("archive"):
            for name, blob in inputs.blobs.items():
                target = store.archive_path(store.RAW_PREFIX + name, blob.generation)
                store.copy(settings, store.RAW_PREFIX + name, blob.generation, target)
                record["inputs"][store.RAW_PREFIX + name]["archive"] = target
        trained = train(
            {n: b.data for n, b in inputs.blobs.items()}, settings, timer, today or date.today()
        )
        record["cleaning"] = trained.cleaning
        version = run_id
        with timer("write"):
            digests = _write_artifacts(settings, version, trained.files)
            for entry in trained.served.values():
                entry["sha256"] = {
                    entry["onnx"]: digests[entry["onnx"]],
                    entry["skops"]: digests[entry["skops"]],
                }
            manifest = {
                "version": version,
                "created": now(),
                "run_id": run_id,
                "target": F.TARGET,
                "unit": "CLP per litre",
                "models": trained.served,
                "next": trained.next_row,
                "backtest": {
                    "months": trained.backtest_months,
                    "long_months": trained.long_months,
                    "method": "rolling origin, expanding window, one step ahead, refit each month",
                    "table": "backtest.csv",
                    "chart": "backtest.png",
                },
                "candidates": trained.candidates,
                "inputs": record["inputs"],
                "cleaning": trained.cleaning,
                "libraries": _library_versions(),
                "files": digests,
            }
            store.write_json(settings, store.model_path(version, "manifest.json"), manifest)
        record["version"] = version
        record["models"] = {
            role: {"candidate": e["candidate"], **e["backtest"]}
            for role, e in trained.served.items()
        }
        record["naive"] = trained.served["forecast"]["naive"]
        if not trained.promote:
            record.update(outcome="not_promoted", reason=trained.reason)
        else:
            with timer("promote"):
                record.update(promote(settings, version, run_id, pointer, trained.reason))
    except DataError as exc:
        record.update(outcome="failed", reason=exc.message, error={"data": True, **exc.to_dict()})
        log.warning("run %s failed: %s", run_id, exc.message, extra={"run_id": run_id})
    except MilkPriceError as exc:
        record.update(outcome="failed", reason=exc.message, error=exc.to_dict())
        log.error("run %s failed: %s", run_id, exc.message, extra={"run_id": run_id})
    except Exception as exc:  # a bug must still leave a record; the caller sees a 500
        record.update(outcome="failed", reason=f"internal error: {type(exc).__name__}: {exc}")
        log.exception("run %s failed", run_id, extra={"run_id": run_id})
    finally:
        record["timings"] = timer.seconds
        record["seconds"] = round(time.perf_counter() - started, 3)
        record["finished"] = now()
        log.info(
            "run %s %s in %.1f s: %s",
            run_id,
            record["outcome"],
            record["seconds"],
            record.get("reason", ""),
            extra={"run_id": run_id, "trigger": trigger, "version": record.get("version")},
        )
        if record["outcome"] != "skipped":
            with contextlib.suppress(MilkPriceError):
                record.pop("stage", None)
                store.write_json(settings, record_name, record)
    return record


def promote(
    settings: Settings,
    version: str,
    run_id: str,
    seen: tuple[Any, int] | None,
    reason: str,
) -> dict[str, Any]:
    """Move the pointer from the generation this run saw at its start, or say who moved it."""
    doc = {"version": version, "run_id": run_id, "promoted": now()}
    expected = seen[1] if seen else 0
    try:
        store.write_json(settings, store.POINTER, doc, if_generation_match=expected)
    except Conflict:
        current = store.read_json(settings, store.POINTER)
        other = current[0].get("version") if current else "?"
        return {
            "outcome": "not_promoted",
            "reason": f"another run promoted version {other} while this one trained",
        }
    return {"outcome": "promoted", "reason": reason}


def rollback(settings: Settings, version: str) -> dict[str, Any]:
    """Point serving at an earlier version whose manifest exists."""
    if store.read(settings, store.model_path(version, "manifest.json")) is None:
        raise MilkPriceError(f"no model version {version} in the bucket", status=404)
    seen = store.read_json(settings, store.POINTER)
    result = promote(settings, version, f"rollback-{version}", seen, f"rolled back to {version}")
    if result["outcome"] != "promoted":
        raise Conflict(result["reason"])
    return result
