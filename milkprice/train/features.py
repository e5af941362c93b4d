"""Monthly feature rows, each built only from information known before its month.

Two vocabularies live here:

* the **legacy** 141 features, named and computed exactly as the old system did, so that the
  rows old clients still send mean the same thing. For macro series that includes the old
  decoding of the dotted cells (``legacy_int``, ``legacy_index``), lossy as it is: a client's
  ``PIB_Pesca_mes_anterior`` is the old decoding, so the legacy model must be trained on it.
* extra features for the forecast model: more price lags, last year's change for the same
  month, the calendar month, and macro series decoded by the cleaning rules of ``data``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from milkprice.schema import IMACEC_SERIES, IVCM, PIB_SERIES, PRICE, REGIONS
from milkprice.train.data import CleanData

LEGACY_SALES = "num"  # the old name of the decoded non-durables sales index
LEGACY_SERIES = (PRICE, *REGIONS, *PIB_SERIES, *IMACEC_SERIES, LEGACY_SALES)
LEGACY_SUFFIXES = ("_shift3_mean", "_shift3_std", "_mes_anterior")
LEGACY_FEATURES = tuple(f"{s}{suffix}" for suffix in LEGACY_SUFFIXES for s in LEGACY_SERIES)
REQUIRED_MACRO = (*PIB_SERIES, *IMACEC_SERIES, IVCM)

LAST_PRICE = f"{PRICE}_mes_anterior"
PRICE_EXTRA = tuple(f"{PRICE}_{n}" for n in ("lag2", "lag3", "lag12", "lag13"))
CHANGE_1 = f"{PRICE}_cambio_mes_anterior"  # change between the two months before
CHANGE_12 = f"{PRICE}_cambio_hace_12"  # last year's change into the same month
LOG_CHANGE_1 = f"{PRICE}_logcambio_mes_anterior"  # log of last month's ratio to the one before
LOG_CHANGE_12 = f"{PRICE}_logcambio_hace_12"  # log of last year's ratio into the same month
LOG_YEAR = f"{PRICE}_logcambio_anual"  # log of last month's price over a year before it
LOG_CHANGE_2 = f"{PRICE}_logcambio_hace_2"  # the monthly log change two months back
# the same month's log change two, three and four years back: a seasonal pattern that is
# averaged over several years moves less with one odd year
LOG_CHANGE_YEARS = tuple(f"{PRICE}_logcambio_hace_{12 * k}" for k in (2, 3, 4))
MONTHS = tuple(f"mes_{m:02d}" for m in range(1, 13))
PRICE_FEATURES = (
    LAST_PRICE,
    f"{PRICE}_shift3_mean",
    f"{PRICE}_shift3_std",
    *PRICE_EXTRA,
    CHANGE_1,
    CHANGE_12,
    LOG_CHANGE_1,
    LOG_CHANGE_12,
    LOG_YEAR,
)
LOG_CHANGE_LAGS = {  # feature -> how many months back its monthly log change is
    LOG_CHANGE_1: 1,
    LOG_CHANGE_2: 2,
    LOG_CHANGE_12: 12,
    **dict(zip(LOG_CHANGE_YEARS, (24, 36, 48), strict=True)),
}
SEASONAL_AR = (LAST_PRICE, LOG_CHANGE_1, LOG_CHANGE_2, LOG_CHANGE_12, *LOG_CHANGE_YEARS)
# Macro drivers as log changes up to last month, each (series, months): the dollar (dairy
# trades in dollars) and the economy's activity. Decoded by the cleaning rules; a series the
# file lacks gives an empty column, and a model using it is not scored.
EXCHANGE_RATE = "Tipo_de_cambio_del_dolar_observado_diario"
MACRO_DRIVERS = ((EXCHANGE_RATE, 3), (EXCHANGE_RATE, 12), (IMACEC_SERIES[0], 12))
MACRO_CHANGES = tuple(f"bc_{series}_logcambio_{n}m" for series, n in MACRO_DRIVERS)
RAIN_FEATURES = tuple(f"{r}{suffix}" for suffix in LEGACY_SUFFIXES for r in REGIONS)
TARGET = PRICE
ALL_SOURCES = "_all_sources"  # not a feature: whether all three files have this month


def legacy_int(text: str) -> float:
    """The old decoding of national-accounts cells: drop the dots, read an integer."""
    return float(int(text.replace(".", "")))


def legacy_index(text: str) -> float:
    """The old decoding of index cells (Imacec, sales): about 100, truncating as it did."""
    parts = text.split(".")
    head = parts[0]
    rest = parts[1] if len(parts) > 1 else ""
    if head.startswith("1"):
        if len(head) > 2:
            return float(f"{head}.{rest}") if rest else float(head)
        joined = head + rest
        return float(f"{joined[:3]}.{joined[3:]}") if joined[3:] else float(joined[:3])
    if len(head) > 2:
        return float(f"{head[:2]}.{head[-1]}")
    joined = head + rest
    return float(f"{joined[:2]}.{joined[2:]}") if joined[2:] else float(joined[:2])


def _decode_text(text: pd.DataFrame, column: str, fn: object) -> pd.Series:
    cells = text[column].dropna()
    return cells.map(fn).reindex(text.index).astype(float)  # type: ignore[arg-type]


def monthly_series(clean: CleanData) -> pd.DataFrame:
    """Every series on one complete monthly index, through the month after the last price."""
    last = clean.milk.index.max() + 1
    first = min(clean.milk.index.min(), clean.rain.index.min(), clean.macro.index.min())
    index = pd.period_range(first, last, freq="M", name="month")
    frame = pd.DataFrame(index=index)
    frame[PRICE] = clean.milk.reindex(index)
    for region in REGIONS:
        frame[region] = clean.rain[region].reindex(index)
    text = clean.macro_text
    legacy = {c: _decode_text(text, c, legacy_int) for c in PIB_SERIES}
    legacy |= {c: _decode_text(text, c, legacy_index) for c in IMACEC_SERIES}
    legacy[LEGACY_SALES] = _decode_text(text, IVCM, legacy_index)
    for name, values in legacy.items():
        frame[name] = values.reindex(index)
    # The old system dropped a month when any national-accounts series was missing in it.
    incomplete = frame[list(PIB_SERIES)].isna().any(axis=1)
    frame.loc[incomplete, list(PIB_SERIES)] = np.nan
    incomplete = frame[list(IMACEC_SERIES)].isna().any(axis=1)
    frame.loc[incomplete, list(IMACEC_SERIES)] = np.nan
    return frame


MIN_MACRO_MONTHS = 36  # a shorter macro series cannot inform a model


def macro_series(clean: CleanData) -> list[str]:
    counts = clean.macro.notna().sum()
    return [c for c in clean.macro.columns if counts[c] >= MIN_MACRO_MONTHS]


def macro_feature_names(clean: CleanData) -> tuple[str, ...]:
    """Last month's value of each macro series, decoded by the cleaning rules."""
    return tuple(f"bc_{c}_lag1" for c in macro_series(clean))


def build(clean: CleanData) -> pd.DataFrame:
    """One row per month: the target (NaN for the month to forecast) and every feature."""
    series = monthly_series(clean)
    shifted = series.shift(1)
    window = shifted.rolling(3, min_periods=1)
    parts = [
        series[[TARGET]],
        window.mean().add_suffix("_shift3_mean"),
        window.std().add_suffix("_shift3_std"),
        shifted.add_suffix("_mes_anterior"),
    ]
    price = series[PRICE]
    extra = pd.DataFrame(index=series.index)
    for lag in (2, 3, 12, 13):
        extra[f"{PRICE}_lag{lag}"] = price.shift(lag)
    extra[CHANGE_1] = price.shift(1) - price.shift(2)
    extra[CHANGE_12] = price.shift(12) - price.shift(13)
    log_price = np.log(price.where(price > 0))
    extra[LOG_YEAR] = log_price.shift(1) - log_price.shift(13)
    log_change = log_price.diff()
    for name, lag in LOG_CHANGE_LAGS.items():
        extra[name] = log_change.shift(lag)
    month_of_year = series.index.month
    for m, name in enumerate(MONTHS, start=1):
        extra[name] = (month_of_year == m).astype(float)
    macro = clean.macro[macro_series(clean)].reindex(series.index).shift(1)
    macro.columns = list(macro_feature_names(clean))
    for name, (column, n) in zip(MACRO_CHANGES, MACRO_DRIVERS, strict=True):
        values = clean.macro[column] if column in clean.macro else pd.Series(dtype=float)
        log_level = np.log(values.where(values > 0)).reindex(series.index)
        extra[name] = log_level.shift(1) - log_level.shift(1 + n)
    complete = series[[PRICE, *REGIONS, LEGACY_SALES]].notna().all(axis=1).rename(ALL_SOURCES)
    return pd.concat([*parts, extra, macro, complete], axis=1)


def evaluation_months(frame: pd.DataFrame, months: int) -> pd.PeriodIndex:
    """The last ``months`` months that all three files cover and whose legacy row is complete.

    Every candidate, the old pipeline included, is scored on these same months.
    """
    known = frame[ALL_SOURCES] & frame[list(LEGACY_FEATURES)].notna().all(axis=1)
    index = frame.index[known]
    return pd.PeriodIndex(index[-months:])


def next_month(frame: pd.DataFrame) -> pd.Period:
    """The month after the last known price: the one ``/forecast`` answers for."""
    return frame.index[frame[TARGET].notna()].max() + 1
