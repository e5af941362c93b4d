"""`milkprice replay`: the system run month by month on a folder's data, as if it had been
running then, and its forecast ledger beside the backtest of the same months.

For each month from ``--from`` to the last price, the three raw files are cut after that
month (no row of a later month), uploaded to a bucket of their own, and a training run reads
them (in this process, as the train function would), so every promoted version serves until
the next and each upload scores the forecasts the earlier versions served. At the end the
ledger's figures per horizon are printed beside the forecast path's backtest figures on
exactly the same (month, horizon) pairs, from the last run's ``horizons.csv``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from milkprice import accuracy, contract, store
from milkprice.schema import MONTHS_ES, RAW_FILES
from milkprice.settings import Settings

MILK, RAIN, MACRO = RAW_FILES


def _month_of(name: str, row: dict[str, str]) -> str | None:
    """The ``YYYY-MM`` a raw row is about (None when its period does not read as one)."""
    if name == MILK:
        months = {m.lower(): i + 1 for i, m in enumerate(MONTHS_ES)}
        number = months.get(row.get("Mes", "").strip().lower())
        year = row.get("Anio", "").strip()
        return f"{int(year):04d}-{number:02d}" if number and year.isdigit() else None
    text = ((row.get("date") if name == RAIN else row.get("Periodo")) or "")[:7]
    year, _, month = text.partition("-")
    if not (year.isdigit() and month.isdigit() and 1 <= int(month) <= 12):
        return None
    return text


def cut(name: str, payload: bytes, last: str) -> bytes:
    """``payload`` without the rows of months after ``last``; rows whose period does not
    read stay (cleaning drops or reports them as it always does)."""
    text = payload.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    kept = [header]
    for row in rows[1:]:
        month = _month_of(name, dict(zip(header, row, strict=False)))
        if month is None or month <= last:
            kept.append(row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept)
    return out.getvalue().encode("utf-8")


def cut_files(raw: dict[str, bytes], last: str) -> dict[str, bytes]:
    return {name: cut(name, payload, last) for name, payload in raw.items()}


def last_month(milk: bytes) -> str:
    """The last month of a price file."""
    reader = csv.DictReader(io.StringIO(milk.decode("utf-8-sig")))
    months = [m for row in reader if (m := _month_of(MILK, row))]
    return max(months)


def replay(
    settings: Settings,
    raw: dict[str, bytes],
    first: str,
    today: date,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Upload each month's cut and train on it, from ``first`` to the last price; returns
    what each run did (month, outcome, version, seconds, scored)."""
    from milkprice.train import runner

    end = last_month(raw[MILK])
    month, done = first, []
    while month <= end:
        for name, payload in cut_files(raw, month).items():
            store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")
        started = time.perf_counter()
        record = runner.run(settings, "upload", {"replay": month}, today=today)
        seconds = time.perf_counter() - started
        step = record.ledger or contract.LedgerStep()
        say(
            f"{month}: {record.outcome} in {seconds:.0f} s, scored {step.scored}"
            + (f" (ledger: {step.error})" if step.error else "")
        )
        done.append(
            {
                "month": month,
                "outcome": record.outcome,
                "version": record.version,
                "seconds": round(seconds, 1),
                "scored": step.scored,
            }
        )
        month = accuracy.add_months(month, 1)
    return done


def backtest_beside(
    scored: list[contract.ScoredForecast], milk: bytes, today: date, horizon: int
) -> dict[int, dict[str, float]]:
    """The forecast path's backtest (rolling origin on the whole price file, as training
    runs it) on exactly the (month, horizon) pairs the ledger scored: RMSE and coverage."""
    import numpy as np
    import pandas as pd

    from milkprice.train import data, horizons

    prices, _ = data.clean_milk(milk, today)
    first = min(f.month for f in scored)
    result = horizons.run(prices, pd.Period(first, freq="M"), horizon)
    months = pd.period_range(first, max(f.month for f in scored), freq="M")
    table = horizons.table(result, months).set_index(["month", "horizon"])
    found: dict[int, dict[str, float]] = {}
    for h in sorted({f.horizon for f in scored}):
        pairs = [table.loc[(f.month, h)] for f in scored if f.horizon == h]
        error = np.array([p["path"] - p["actual"] for p in pairs])
        inside = [p["path_lower"] <= p["actual"] <= p["path_upper"] for p in pairs]
        found[h] = {
            "rmse": float(np.sqrt(np.mean(error**2))),
            "coverage": float(np.mean(inside)),
        }
    return found


def comparison(doc: contract.Ledger, backtest: dict[int, dict[str, float]]) -> str:
    """Live figures per horizon beside the backtest's on the same months."""
    rows = []
    for f in doc.horizons:
        b = backtest.get(f.horizon, {})
        band = f.coverage_band or [0.0, 1.0]
        rows.append(
            [
                f.horizon,
                f.count,
                f"{f.forecast.rmse:.2f}",
                f"{b['rmse']:.2f}" if b else "-",
                f"{f.naive.rmse:.2f}",
                f"{f.rmse_to_naive:.2f}" if f.rmse_to_naive is not None else "-",
                f"{f.coverage:.0%}" if f.coverage is not None else "-",
                f"{band[0]:.0%}-{band[1]:.0%}",
                f"{b['coverage']:.0%}" if b else "-",
            ]
        )
    header = ["ahead", "scored", "live rmse", "backtest rmse", "naive rmse", "live/naive"]
    header += ["live coverage", "90% band", "backtest coverage"]
    cells = [header] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", accuracy.summary(doc.drift)])


def main(settings: Settings, args: Any) -> int:
    """`milkprice replay`: an emulator of its own on a free port, a bucket in it, the runs,
    then the tables (and with --json, the ledger, the runs and the backtest beside)."""
    import dataclasses
    import json
    import os
    import shutil
    import tempfile
    import uuid
    from pathlib import Path

    from milkprice.local import object_stores, processes, sample

    raw = sample.read_folder(args.data)
    if args.quick:
        settings = dataclasses.replace(settings, backtest_months=6, long_backtest_months=0)
    processes.unwind_on_sigterm()  # every child is still stopped
    folder = Path(tempfile.mkdtemp(prefix="milkprice-replay-"))
    proc, env = object_stores.start_free(settings.cloud, folder)
    try:
        os.environ.update(env)
        store.reset()
        settings = dataclasses.replace(settings, bucket=f"replay-{uuid.uuid4().hex[:8]}")
        store.ensure_bucket(settings)
        views = f"{settings.backtest_months}/{settings.long_backtest_months}-month backtests"
        print(f"replaying {args.data} from {args.first} ({views}) in {settings.bucket}")
        today = date.today()
        runs = replay(settings, raw, args.first, today, lambda line: print(line, flush=True))
        doc, _ = contract.read_ledger(settings)
    finally:
        processes.stop([proc])
        shutil.rmtree(folder, ignore_errors=True)
    if not doc.forecasts:
        print("no forecast was scored")
        return 1
    beside = backtest_beside(doc.forecasts, raw[MILK], today, settings.horizon)
    print()
    print(comparison(doc, beside))
    if args.json:
        report = {
            "settings": views,
            "runs": runs,
            "ledger": contract.to_builtins(doc),
            "backtest": beside,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
