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
    text = (row.get("date") if name == RAIN else row.get("Periodo")) or ""
    return text[:7] if len(text) >= 7 else None


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
