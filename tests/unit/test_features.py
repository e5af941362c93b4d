"""Features: the legacy 141 mean what they meant, and nothing is built from the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from milkprice.train import data
from milkprice.train import features as F
from tests.support.buckets import TODAY
from tests.support.paths import SHARED


@pytest.fixture(scope="module")
def real_frame(real_raw: dict[str, bytes]) -> pd.DataFrame:
    return F.build(data.clean(real_raw, F.REQUIRED_MACRO, TODAY))


@pytest.fixture(scope="module")
def legacy() -> tuple[pd.DataFrame, pd.Series]:
    if not (SHARED / "legacy-features").is_dir():
        pytest.skip(f"the legacy features are not at {SHARED / 'legacy-features'}")
    X = pd.read_csv(SHARED / "legacy-features" / "X.csv")
    y = pd.read_csv(SHARED / "legacy-features" / "y.csv", header=None)[0]
    return X, y


def test_legacy_names_in_order(legacy: tuple[pd.DataFrame, pd.Series]) -> None:
    X, _ = legacy
    assert list(F.LEGACY_FEATURES) == list(X.columns)
    assert len(F.LEGACY_FEATURES) == 141


def test_legacy_rows_are_rebuilt_exactly(
    real_frame: pd.DataFrame, legacy: tuple[pd.DataFrame, pd.Series]
) -> None:
    """The old system's 74 training rows (2014-03 to 2020-04) come out of our builder."""
    X, y = legacy
    months = pd.period_range("2014-03", periods=len(X), freq="M")
    ours = real_frame.loc[months, list(X.columns)].reset_index(drop=True)
    np.testing.assert_allclose(real_frame.loc[months, F.TARGET].to_numpy(), y.to_numpy())
    # From the second row on, every one of the 141 values matches.
    np.testing.assert_allclose(ours.iloc[1:].to_numpy(), X.iloc[1:].to_numpy(), rtol=1e-8)
    # The old first row averaged over the two months its joined table had; last month's
    # values are the same.
    last = [c for c in X.columns if c.endswith("_mes_anterior")]
    np.testing.assert_allclose(ours.loc[0, last].to_numpy(float), X.loc[0, last].to_numpy(float))


def test_legacy_index_decoding() -> None:
    assert F.legacy_index("102.796.218") == pytest.approx(102.796)
    assert F.legacy_index("10.546.824") == pytest.approx(105.46)  # it kept two groups only
    assert F.legacy_index("978.554.365") == pytest.approx(97.8)  # the old truncation
    assert F.legacy_index("96.133.164") == pytest.approx(96.133)
    assert F.legacy_int("5.691.837") == 5691837.0


def test_features_use_only_earlier_months(sample_raw: dict[str, bytes]) -> None:
    clean = data.clean(sample_raw, F.REQUIRED_MACRO, TODAY)
    before = F.build(clean)
    month = pd.Period("2015-06", freq="M")
    clean.milk.loc[month] += 1000.0
    clean.rain.loc[month] += 1000.0
    clean.macro.loc[month] *= 3.0
    after = F.build(clean)
    features = [c for c in before.columns if c not in (F.TARGET, F.ALL_SOURCES)]
    upto = before.index <= month
    pd.testing.assert_frame_equal(before.loc[upto, features], after.loc[upto, features])
    changed = (before.loc[month + 1, features] != after.loc[month + 1, features]).sum()
    assert changed > 0  # and the month after does see it


def test_next_month_and_evaluation_window(real_frame: pd.DataFrame) -> None:
    assert str(F.next_month(real_frame)) == "2021-03"
    months = F.evaluation_months(real_frame, 24)
    assert (str(months[0]), str(months[-1])) == ("2018-05", "2020-04")
    row = real_frame.loc[F.next_month(real_frame)]
    assert row[F.LAST_PRICE] == pytest.approx(295.24)
    assert row[F.CHANGE_12] == pytest.approx(
        real_frame.loc["2020-03", F.TARGET] - real_frame.loc["2020-02", F.TARGET]
    )
    assert row["mes_03"] == 1.0 and row["mes_04"] == 0.0


def test_seasonal_log_changes_and_macro_drivers(real_frame: pd.DataFrame) -> None:
    price = real_frame[F.TARGET]
    month = pd.Period("2019-04", freq="M")

    def change(m: pd.Period) -> float:
        return float(np.log(price[m] / price[m - 1]))

    assert real_frame.loc[month, F.LOG_CHANGE_2] == pytest.approx(change(month - 2))
    for name, years in zip(F.LOG_CHANGE_YEARS, (2, 3, 4), strict=True):
        assert real_frame.loc[month, name] == pytest.approx(change(month - 12 * years))
    # the dollar's 3-month log change up to last month: 667.68 (2019-03) over 681.99 (2018-12)
    dollar = real_frame.loc[month, F.MACRO_CHANGES[0]]
    assert dollar == pytest.approx(np.log(667.68 / 681.99), abs=1e-4)
    # every feature of the long-history model exists from 1983 on
    first = real_frame.dropna(subset=list(F.SEASONAL_AR)).index.min()
    assert first <= pd.Period("1983-12", freq="M")
