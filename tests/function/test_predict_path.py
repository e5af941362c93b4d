"""/forecast?months=N: the first N months of the forecast path the manifest holds, each with
its interval; a bad N is a 400 naming the range; a model from before the path is a 409.
/forecast alone answers the path's first month, the month the landing page shows; a model
from before the path answers its forecast model's price of next month's row, as it did."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from milkprice.predict import cache
from milkprice.settings import Settings
from milkprice.train import artifacts, horizons
from tests.support.buckets import artifact, clone, first_release, manifest, promote
from tests.support.openapi_client import Client
from tests.support.pages import Page, printed, shown_forecast
from tests.support.rows import next_row

pytestmark = pytest.mark.usefixtures("fresh_process")


def test_the_path_answers_n_months_from_the_manifest(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    _, doc = on_sample
    client = Client()
    one = client.get("/forecast").get_json()
    assert set(one) >= {"month", "price", "model_version", "interval"}  # as before
    path = doc["path"]["months"]
    assert len(path) == 12
    for n in (1, 5, 12):
        answer = client.get(f"/forecast?months={n}")
        assert answer.status_code == 200
        assert answer.headers["X-Model-Version"] == doc["version"]
        body = answer.get_json()
        assert body["model_version"] == doc["version"] and len(body["months"]) == n
        months = [pd.Period(m["month"], "M") for m in body["months"]]
        assert months == [pd.Period(one["month"], "M") + i for i in range(n)]
        for got, kept in zip(body["months"], path, strict=False):
            assert got["price"] == kept["price"]
            assert got["interval"] == {"level": 0.8, "lower": kept["lower"], "upper": kept["upper"]}


@pytest.mark.parametrize("months", ["0", "13", "-1", "1.5", "abc", "", "%C2%B2"])
def test_a_bad_months_is_a_400_naming_the_range(
    on_sample: tuple[Settings, dict[str, Any]], months: str
) -> None:
    answer = Client().get(f"/forecast?months={months}")
    assert answer.status_code == 400
    assert "months must be a whole number from 1 to 12" in answer.get_json()["error"]


def test_a_model_from_before_the_path_says_so(
    settings: Settings, trained_sample: tuple[Settings, dict[str, Any]]
) -> None:
    promote(settings, clone(trained_sample[0], settings, "old", edit=lambda d: d.pop("path")))
    cache.reset()
    client = Client()
    answer = client.get("/forecast?months=3")
    assert answer.status_code == 409
    assert "predates the forecast path" in answer.get_json()["error"]
    assert client.get("/forecast").status_code == 200  # next month's forecast still served


def test_the_landing_page_shows_the_path_and_its_backtest(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    _, doc = on_sample
    page = Client().get("/").get_data(as_text=True)
    assert 'id="path-chart"' in page and "<polygon" in page
    for kept, figures in zip(doc["path"]["months"], doc["path"]["short"]["horizons"], strict=True):
        assert f"{kept['price']:.2f}" in page and f"{kept['upper']:.2f}" in page
        assert f"{figures['path']['rmse']:.2f}" in page


def test_every_horizon_s_coverage_comes_with_its_band_in_the_manifest_and_on_the_page(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    _, doc = on_sample
    views = [v for v in (doc["path"]["short"], doc["path"].get("long")) if v]
    for view in views:
        for figures in view["horizons"]:
            band = list(horizons.coverage_band(figures["scored"]))
            assert list(figures["path"]["coverage_band"]) == band
            assert "coverage_band" not in figures["naive"]  # the path's interval's alone
    read = Page(Client().get("/").get_data(as_text=True))
    header, *rows = read.rows("path")
    columns = [i for i, name in enumerate(header) if name == "Coverage"]
    assert len(columns) == len(views)
    for row, *by_view in zip(rows, *(v["horizons"] for v in views), strict=True):
        for column, figures in zip(columns, by_view, strict=True):
            own = figures["path"]
            low, high = own["coverage_band"]
            mark = "" if low <= own["coverage"] <= high else " \N{BALLOT X}"
            percent = [f"{100 * v:.0f}" for v in (own["coverage"], low, high)]
            assert row[column] == "{}% ({}\N{EN DASH}{}%{})".format(*percent, mark)
    # the card beside next month's forecast: its backtest coverage and the band of its count
    first = doc["path"]["short"]["horizons"][0]["path"]
    low, high = first["coverage_band"]
    assert read.text("coverage-band") == f"{low:.0%} to {high:.0%}"
    assert f"held {first['coverage']:.0%} of the time" in read.text("interval")


def test_one_month_has_one_forecast_on_every_route_and_on_the_page(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    _, doc = on_sample
    client = Client()
    alone = client.get("/forecast").get_json()
    [one] = client.get("/forecast?months=1").get_json()["months"]
    first = client.get("/forecast?months=12").get_json()["months"][0]
    assert {k: alone[k] for k in ("month", "price", "interval")} == one == first
    assert alone["source"] == "path" and alone["model_version"] == doc["version"]
    page = client.get("/").get_data(as_text=True)
    assert shown_forecast(page) == printed(one)
    read = Page(page)
    header, row = read.rows("path")[:2]  # the path's table starts with the same month
    assert header[:4] == ["Month", "Price", "Lower", "Upper"]
    shown = printed(one)
    assert row[:4] == [f"{one['month']} (1 ahead)", shown["price"], shown["lower"], shown["upper"]]
    h1 = doc["path"]["short"]["horizons"][0]  # and the card gives that month's backtest figures
    figures = f"RMSE {h1['path']['rmse']:.2f} on {h1['scored']} months"
    assert figures in read.text("forecast-accuracy") and row[4] == f"{h1['path']['rmse']:.2f}"


def test_a_first_release_model_answers_its_forecast_model_s_forecast(settings: Settings) -> None:
    version = first_release(settings)
    promote(settings, version)
    cache.reset()
    doc = manifest(settings)
    assert "path" not in doc
    graph = artifact(settings, version, doc["models"]["forecast"]["onnx"])
    features = doc["models"]["forecast"]["features"]
    row = np.array([[next_row(doc)[f] for f in features]], dtype=np.float64)
    price = float(artifacts.onnx_predict(graph, row)[0])
    spec = doc["models"]["forecast"]["interval"]
    band = {
        "level": 0.8,
        "lower": price * (1 + spec["lower_ratio"]),
        "upper": price * (1 + spec["upper_ratio"]),
    }
    client = Client()
    answer = client.get("/forecast").get_json()
    assert answer == {
        "month": doc["next"]["month"],
        "price": price,
        "model_version": version,
        "interval": band,
        "source": "model",
    }
    assert client.get("/forecast?months=1").status_code == 409
    page = client.get("/").get_data(as_text=True)
    assert shown_forecast(page) == printed(answer)
    rmse, months = doc["models"]["forecast"]["backtest"]["rmse"], len(doc["backtest"]["months"])
    assert f"RMSE {rmse:.2f} on {months} months" in Page(page).text("forecast-accuracy")
