"""Reading, cleaning and validating the three raw files.

Every problem that makes a file unusable raises :class:`DataError` naming the file, the column
and the line (1-based, the header is line 1). Problems the real files are known to have and that
have one safe answer (an unparsable or repeated period in ``banco_central.csv``, a placeholder
cell, a value outside its series' sanity range) are dropped deterministically and counted in
``CleanData.counts``, which the run record keeps.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from milkprice import schema
from milkprice.errors import DataError
from milkprice.schema import MONTHS_ES, PRICE, REGIONS

RAW_FILES = (MILK, RAIN, MACRO) = schema.RAW_FILES
# A cell the central bank's export uses as a footnote mark where a series has no value.
PLACEHOLDERS = frozenset({"a"})
MAX_PRICE = 5_000.0  # CLP per litre
MAX_RAIN = 3_000.0  # mm in a month

_NUMBER = re.compile(r"^-?\d+(\.\d+)*$")


@dataclass
class CleanData:
    """The three sources on one monthly ``PeriodIndex`` each, plus what cleaning dropped."""

    milk: pd.Series
    rain: pd.DataFrame
    macro: pd.DataFrame
    macro_text: pd.DataFrame  # validated cells as written, for the legacy features' decoding
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


# ---------------------------------------------------------------- reading


def read_table(file: str, data: bytes, required: tuple[str, ...]) -> pd.DataFrame:
    """Parse CSV bytes into strings, checking encoding, shape and the required columns.

    The frame's index is the line number of each row in the file.
    """
    if not data.strip():
        raise DataError(file, "the file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = f"not UTF-8 (byte {exc.start} is 0x{data[exc.start]:02x})"
        raise DataError(file, problem, row=line) from None
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip() for h in rows[0]]
    if len(header) == 1 and ";" in header[0]:
        raise DataError(file, "columns are separated by ';', expected ','", row=1)
    missing = [c for c in required if c not in header]
    if missing:
        unexpected = [h for h in header if h not in required]
        hint = f" (found instead: {', '.join(unexpected[:3])})" if unexpected else ""
        raise DataError(file, f"missing column{hint}", column=missing[0], row=1)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(file, "column appears more than once", column=dup[0], row=1)
    body = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    if not body:
        raise DataError(file, "the file has a header but no data rows")
    for n, r in body:
        if len(r) != len(header):
            raise DataError(
                file, f"has {len(r)} fields where the header has {len(header)} (cut short?)", row=n
            )
    frame = pd.DataFrame([[c.strip() for c in r] for _, r in body], columns=header, dtype=object)
    frame.index = pd.Index([n for n, _ in body], name="line")
    return frame


def _number(file: str, column: str, line: int, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(file, f"{text!r} is not a number", column=column, row=line) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise DataError(
            file, f"{text!r} is outside the sane range [{low:g}, {high:g}]", column=column, row=line
        )
    return value


def _check_future(file: str, months: pd.Series, column: str, today: date) -> None:
    limit = pd.Period(today, freq="M") + 1
    late = months[months > limit]
    if len(late):
        line = int(late.index[0])
        raise DataError(file, f"month {late.iloc[0]} lies in the future", column=column, row=line)


def _dedupe(file: str, frame: pd.DataFrame, key: str, column: str) -> tuple[pd.DataFrame, int]:
    """Drop exact repeats of a month; a month repeated with other values is an error."""
    repeated = frame[frame.duplicated(key, keep=False)]
    for _, group in repeated.groupby(key, sort=True):
        values = group.drop(columns=[key]).astype(str)
        if len(values.drop_duplicates()) > 1:
            lines = [int(i) for i in group.index]
            raise DataError(
                file,
                f"month {group[key].iloc[0]} appears on lines {lines} with different values",
                column=column,
                row=lines[1],
            )
    kept = frame.drop_duplicates(key, keep="first")
    return kept, len(frame) - len(kept)


# ---------------------------------------------------------------- the three files


def clean_milk(data: bytes, today: date) -> tuple[pd.Series, dict[str, int]]:
    table = read_table(MILK, data, ("Anio", "Mes", PRICE))
    lookup = {m.lower(): i + 1 for i, m in enumerate(MONTHS_ES)}
    months = []
    prices = []
    for line, row in table.iterrows():
        n = int(str(line))
        year = int(_number(MILK, "Anio", n, row["Anio"], 1900, 2200))
        month = lookup.get(row["Mes"].lower())
        if month is None:
            raise DataError(
                MILK, f"{row['Mes']!r} is not a month (Ene ... Dic)", column="Mes", row=n
            )
        months.append(pd.Period(year=year, month=month, freq="M"))
        prices.append(_number(MILK, PRICE, n, row[PRICE], 0.0, MAX_PRICE))
    frame = pd.DataFrame({"month": months, PRICE: prices}, index=table.index)
    _check_future(MILK, frame["month"], "Anio", today)
    frame, dropped = _dedupe(MILK, frame, "month", PRICE)
    series = frame.set_index("month")[PRICE].sort_index()
    return series, {"rows": len(table), "duplicate_months_dropped": dropped}


def clean_rain(data: bytes, today: date) -> tuple[pd.DataFrame, dict[str, int]]:
    table = read_table(RAIN, data, ("date", *REGIONS))
    parsed = pd.to_datetime(table["date"], format="%Y-%m-%d", errors="coerce")
    bad = parsed[parsed.isna()]
    if len(bad):
        line = int(bad.index[0])
        text = table.loc[line, "date"]
        raise DataError(RAIN, f"{text!r} is not a date YYYY-MM-DD", column="date", row=line)
    frame = pd.DataFrame({"month": parsed.dt.to_period("M")}, index=table.index)
    for region in REGIONS:
        frame[region] = [
            _number(RAIN, region, int(str(n)), v, 0.0, MAX_RAIN) for n, v in table[region].items()
        ]
    _check_future(RAIN, frame["month"], "date", today)
    frame, dropped = _dedupe(RAIN, frame, "month", REGIONS[0])
    return frame.set_index("month").sort_index(), {
        "rows": len(table),
        "duplicate_months_dropped": dropped,
    }


# ---------------------------------------------------------------- banco_central decoding


@dataclass(frozen=True)
class Rule:
    """How to read one family of macro series.

    The export lost the decimal point and kept dots as digit-group marks, so a cell's digits
    ``D`` stand for ``D * 10**k`` with an unknown ``k``. The readings of a cell are the
    ``D * 10**k`` inside ``[low, high]`` (the family's sanity range). Of those, the series takes
    the path through time that moves least from month to month (in log), preferring a cell's
    value as written when that is a reading, and pulled weakly towards the series' centre:
    ``centre`` where the family has a natural one (an index is about 100), else the median of
    the cells that read as written, else the level nearest ``home`` that fits its digits. The
    scale of a series with no natural centre is only known up to a power of ten, the same for
    all of its months.
    """

    family: str
    low: float
    high: float
    centre: float | None = None
    home: float = 100.0


_RULES: tuple[tuple[Callable[[str], bool], Rule], ...] = (
    (lambda c: c.startswith("Imacec_"), Rule("index", 20, 400, 100)),
    (lambda c: c.startswith("Indice_"), Rule("index", 20, 400, 100)),
    (lambda c: c.startswith("Tipo_de_cambio_nominal"), Rule("index", 20, 400, 100)),
    (lambda c: c.startswith("Tipo_de_cambio_del_dolar"), Rule("exchange_rate", 10, 2_000)),
    (lambda c: c == "PIB" or c.startswith("PIB_"), Rule("national_accounts", 0.1, 1e6, None, 300)),
    (lambda c: c.startswith(("Impuesto_", "Derechos_")), Rule("national_accounts", 0.1, 1e6)),
    (lambda c: c.startswith(("Ocupa", "No_sabe")), Rule("employment", 0, 1e5, None, 300)),
    (lambda c: "oro" in c, Rule("price_gold", 20, 5_000)),
    (lambda c: "plata" in c, Rule("price_silver", 1, 100)),
    (lambda c: "cobre" in c, Rule("price_copper", 0.2, 10)),
    (lambda c: "gas_natural" in c, Rule("price_gas", 0.5, 30)),
    (lambda c: "petroleo" in c, Rule("price_oil", 5, 300)),
    (lambda c: c.startswith("Precio_"), Rule("price_fuel", 10, 5_000)),
    (lambda c: c.startswith("Generacion_"), Rule("energy", 500, 50_000, None, 3_000)),
    (lambda c: c.startswith("Ventas_"), Rule("count", 100, 1e6)),
)
_STEP_PRIOR = 0.02  # weight of the pull towards the centre, per decade of distance
_REWRITE = 0.5  # cost of reading a plain number otherwise than as written, in decades


def rule_for(column: str) -> Rule | None:
    for matches, rule in _RULES:
        if matches(column):
            return rule
    return None


def _literal(text: str) -> float | None:
    return float(text) if text.count(".") <= 1 else None


def _readings(text: str, rule: Rule) -> list[float]:
    digits = text.replace(".", "")
    sign = -1.0 if digits.startswith("-") else 1.0
    d = int(digits.lstrip("-"))
    if d == 0:
        return [0.0] if rule.low <= 0 <= rule.high else []
    found = {sign * d * 10.0**k for k in range(-len(digits) - 1, 7)}
    return sorted(v for v in found if rule.low <= v <= rule.high)


def _centre(cells: list[str], rule: Rule) -> float:
    if rule.centre is not None:
        return math.log10(rule.centre)
    literals = [_literal(t) for t in cells]
    as_written = [math.log10(v) for v in literals if v and rule.low <= v <= rule.high]
    if as_written:
        return float(np.median(as_written))
    digits = [int(t.replace(".", "").lstrip("-")) for t in cells]
    phases = np.asarray([math.log10(d) % 1.0 for d in digits if d > 0])
    if not len(phases):
        return math.log10(rule.home)
    angle = float(np.angle(np.mean(np.exp(2j * np.pi * phases))) / (2 * np.pi) % 1.0)
    return angle + round(math.log10(rule.home) - angle)


def _log(v: float) -> float:
    return math.log10(abs(v)) if v else -3.0


def decode_series(cells: list[str], rule: Rule) -> list[float]:
    """Read a series' cells (in time order) under ``rule``; NaN where no reading is sane.

    A shortest path (Viterbi) over each cell's readings; cells with none are skipped over.
    """
    centre = _centre(cells, rule)
    options = [_readings(t, rule) for t in cells]
    back: list[list[int]] = [[] for _ in cells]
    last: list[float] = []  # readings of the latest cell that had any
    cost: list[float] = []  # best path cost ending at each of them
    end = -1
    for i, (text, opts) in enumerate(zip(cells, options, strict=True)):
        if not opts:
            continue
        literal = _literal(text)
        new_cost = []
        for v in opts:
            own = _STEP_PRIOR * abs(_log(v) - centre)
            if literal is not None and v != literal:
                own += _REWRITE
            steps = [c + abs(_log(v) - _log(p)) for p, c in zip(last, cost, strict=True)]
            j = int(np.argmin(steps)) if steps else -1
            back[i].append(j)
            new_cost.append(own + (steps[j] if steps else 0.0))
        last, cost, end = opts, new_cost, i
    values = [math.nan] * len(cells)
    j = int(np.argmin(cost)) if cost else -1
    for i in range(end, -1, -1):
        if options[i]:
            values[i] = options[i][j]
            j = back[i][j]
    return values


def clean_macro(
    data: bytes, today: date, required: tuple[str, ...]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    table = read_table(MACRO, data, ("Periodo", *required))
    counts = {"rows": len(table)}
    periods = pd.to_datetime(table["Periodo"].str[:10], format="%Y-%m-%d", errors="coerce")
    counts["unparsable_periods_dropped"] = int(periods.isna().sum())
    table = table[periods.notna()].copy()
    table.insert(0, "month", periods[periods.notna()].dt.to_period("M"))
    _check_future(MACRO, table["month"], "Periodo", today)
    series = [c for c in table.columns if c not in ("month", "Periodo")]
    counts["unknown_columns_ignored"] = sum(rule_for(c) is None for c in series)
    series = [c for c in series if rule_for(c) is not None]
    text = table[["month", *series]].copy()
    placeholders = 0
    for column in series:
        cells = text[column]
        marks = cells.isin(PLACEHOLDERS)
        placeholders += int(marks.sum())
        cells = cells.mask(marks | (cells == ""))
        bad = cells.dropna()[~cells.dropna().str.match(_NUMBER)]
        if len(bad):
            raise DataError(
                MACRO, f"{bad.iloc[0]!r} is not a number", column=column, row=int(bad.index[0])
            )
        text[column] = cells
    counts["placeholder_cells"] = placeholders
    text, counts["duplicate_periods_dropped"] = _dedupe(MACRO, text, "month", series[0])
    text = text.set_index("month").sort_index()
    values = pd.DataFrame(index=text.index)
    out_of_range = 0
    for column in series:
        cells = text[column].dropna()
        rule = rule_for(column)
        assert rule is not None
        decoded = pd.Series(decode_series(list(cells), rule), index=cells.index)
        out_of_range += int(decoded.isna().sum())
        values[column] = decoded.reindex(text.index).astype(float)
    counts["out_of_range_cells_dropped"] = out_of_range
    return values, text, counts


# ---------------------------------------------------------------- all three


def clean(
    raw: Mapping[str, bytes], required_macro: tuple[str, ...], today: date | None = None
) -> CleanData:
    """Clean the three raw files; raise DataError on anything that cannot be trained on."""
    today = today or date.today()
    for name in RAW_FILES:
        if name not in raw:
            raise DataError(name, "the file is missing from raw/")
    milk, milk_counts = clean_milk(raw[MILK], today)
    rain, rain_counts = clean_rain(raw[RAIN], today)
    macro, text, macro_counts = clean_macro(raw[MACRO], today, required_macro)
    overlap = milk.index.intersection(rain.index).intersection(macro.dropna(how="all").index)
    if len(overlap) == 0:
        raise DataError(
            MACRO,
            f"no month is covered by all three files (milk {_span(milk.index)}, "
            f"rainfall {_span(rain.index)}, macro {_span(macro.index)})",
        )
    return CleanData(
        milk=milk,
        rain=rain,
        macro=macro,
        macro_text=text,
        counts={MILK: milk_counts, RAIN: rain_counts, MACRO: macro_counts},
    )


def _span(index: pd.Index) -> str:
    return f"{index.min()}..{index.max()}" if len(index) else "none"
