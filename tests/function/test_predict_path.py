"""/forecast?months=N: the first N months of the forecast path the manifest holds, each with
its interval; a bad N is a 400 naming the range; a model from before the path is a 409."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from milkprice.predict import cache
from milkprice.settings import Settings
from tests.support.buckets import clone, promote
from tests.support.openapi_client import Client

pytestmark = pytest.mark.usefixtures("fresh_process")


def test_the_path_answers_n_months_from_the_manifest(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    _, doc = on_sample
    client = Client()
    one = client.get("/forecast").get_json()
    assert set(one) == {"month", "price", "model_version", "interval"}  # as before
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
