"""Training on the real data in ../shared: the figures the product stands on."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest

from milkprice import contract, store
from milkprice.settings import Settings
from milkprice.train import features as F
from milkprice.train import horizons
from tests.support.buckets import trained_bucket

# every candidate on the real data, both views: over two minutes of training on two cores
pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def trained_real_full(gcs: str, real_raw: dict[str, bytes]) -> tuple[Settings, dict[str, Any]]:
    """The real data trained as a deployment trains it: every candidate, both views."""
    return trained_bucket(real_raw, 24, 60, candidates="")


@pytest.fixture(scope="module")
def manifest(trained_real_full: tuple[Settings, dict[str, Any]]) -> dict[str, Any]:
    settings, record = trained_real_full
    return dict(contract.to_builtins(contract.read_manifest(settings, record["version"])))


def test_backtest_window_and_baselines(manifest: dict[str, Any]) -> None:
    months = manifest["backtest"]["months"]
    assert (months[0], months[-1], len(months)) == ("2018-05", "2020-04", 24)
    by_name = {c["name"]: c for c in manifest["candidates"]}
    # The figures measured by hand for the issue, reproduced by the pipeline.
    assert by_name["naive"]["rmse"] == pytest.approx(11.24, abs=0.01)
    assert by_name["naive"]["mape"] == pytest.approx(2.87, abs=0.01)
    assert by_name["seasonal_naive"]["rmse"] == pytest.approx(7.29, abs=0.01)
    assert by_name["old_pipeline"]["rmse"] > by_name["naive"]["rmse"]
    # multiplicative seasonality: the seasonal swing grows with the price level
    assert by_name["seasonal_naive_pct"]["rmse"] < by_name["seasonal_naive"]["rmse"]


def test_served_models_beat_the_naive_forecast(manifest: dict[str, Any]) -> None:
    forecast, legacy = manifest["models"]["forecast"], manifest["models"]["legacy"]
    assert forecast["backtest"]["rmse"] < 0.7 * forecast["naive"]["rmse"]
    assert legacy["backtest"]["rmse"] < legacy["naive"]["rmse"]
    assert set(legacy["features"]) <= set(F.LEGACY_FEATURES)
    assert manifest["next"]["month"] == "2021-03"
    assert set(manifest["next"]["features"]) == set(forecast["features"])


def test_forecast_interval_covers_about_80_percent(manifest: dict[str, Any]) -> None:
    interval = manifest["models"]["forecast"]["interval"]
    assert interval["lower_ratio"] < 0 < interval["upper_ratio"]
    assert 0.7 <= interval["coverage"] <= 0.9  # out of sample, over the 24 scored months
    long = manifest["models"]["forecast"]["backtest_long"]
    assert long["rmse_to_naive"] < 1  # the 60-month view agrees


def test_the_long_view_scores_every_candidate_that_has_the_history(
    manifest: dict[str, Any], trained_real_full: tuple[Settings, dict[str, Any]]
) -> None:
    long = manifest["backtest"]["long_months"]
    assert (long[0], long[-1], len(long)) == ("2015-05", "2020-04", 60)
    by_name = {c["name"]: c for c in manifest["candidates"]}
    naive = by_name["naive"]["long"]["rmse"]
    for name, c in by_name.items():
        if name in ("old_pipeline", "gbm_change_legacy"):
            # the legacy macro features start in 2014: too few months before 2015-05
            assert "long" not in c
            continue
        assert c["long"]["months"] == ["2015-05", "2020-04"] and c["long"]["scored"] == 60
        assert c["long"]["rmse_to_naive"] == pytest.approx(c["long"]["rmse"] / naive)
    # the models of the monthly log change on the long history do well on both views
    for name in ("ridge_ratio_5y", "ridge_ratio_seasonal"):
        assert by_name[name]["long"]["rmse_to_naive"] < 0.7
        assert by_name[name]["rmse"] < 0.7 * by_name["naive"]["rmse"]
    # the backtest table holds the long view, marks the months the models were chosen on, and
    # gives each month an interval from earlier errors only (none in the first year)
    settings, record = trained_real_full
    found = store.read(settings, store.model_path(record["version"], "backtest.csv"))
    assert found is not None
    table = pd.read_csv(io.BytesIO(found.data), index_col="month")
    assert len(table) == 60 and table["selection"].sum() == 24
    assert table.loc["2018-05":, "selection"].all()
    assert table["forecast_lower"].iloc[:12].isna().all()
    assert table["forecast_lower"].iloc[12:].notna().all()
    assert (table["forecast_lower"] < table["forecast_upper"]).iloc[12:].all()


# The 24 months of 2018-05..2020-04 end in the 2019-2020 rise: every forecast of it made ten
# to twelve months ahead came from origins (mid 2018 to early 2019) whose known errors were
# the calmest in years, and no interval calibrated only on those errors covers it. Overlapping
# h-step errors miss together, so a long horizon's 24-month coverage strays outside the
# binomial band about half the time even for an exact interval (the README, "A year ahead").
LONG_AHEAD_ON_THE_RISE = pytest.mark.xfail(
    strict=True, reason="10-12 months ahead on 2018-05..2020-04: below the binomial band"
)


@pytest.mark.parametrize(
    ("view", "h"),
    [
        pytest.param(view, h, marks=[LONG_AHEAD_ON_THE_RISE] if view == "short" and h >= 10 else [])
        for view in ("short", "long")
        for h in range(1, 13)
    ],
)
def test_each_horizon_s_coverage_is_inside_the_band_chance_allows(
    manifest: dict[str, Any], view: str, h: int
) -> None:
    figures = manifest["path"][view]["horizons"][h - 1]
    assert figures["horizon"] == h and figures["scored"] == {"short": 24, "long": 60}[view]
    low, high = figures["path"]["coverage_band"]
    assert (low, high) == horizons.coverage_band(figures["scored"])
    assert low <= figures["path"]["coverage"] <= high, figures["path"]
