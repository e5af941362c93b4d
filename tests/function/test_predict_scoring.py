"""Predictions equal what the stored pipelines give: old rows, new rows, mixed, the forecast.

Every answer goes through the OpenAPI-checking ``Client``; storage is the real emulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from milkprice.errors import MilkPriceError
from milkprice.predict import snapshot, validation
from milkprice.predict.bodies import parse_json
from milkprice.settings import Settings
from tests.support.buckets import manifest
from tests.support.openapi_client import Client
from tests.support.prices import onnx_prices, skops_prices
from tests.support.rows import legacy_rows, next_row, perturbed

pytestmark = pytest.mark.usefixtures("fresh_process")


def test_legacy_rows_equal_the_legacy_pipeline(
    on_real: tuple[Settings, dict[str, Any]],
) -> None:
    settings, doc = on_real
    rows = legacy_rows()
    # rows in the old format go to the legacy model, unless the forecast model needs no more
    forecast_fits = set(doc["models"]["forecast"]["features"]) <= set(rows[0])
    role = "forecast" if forecast_fits else "legacy"
    expected = skops_prices(settings, doc, role, rows)
    response = Client().post("/predict", json={"data": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Model"] == role
    assert response.headers["X-Model-Version"] == doc["version"]
    served = np.array(response.get_json())
    assert served.shape == (len(rows),)
    np.testing.assert_allclose(served, expected, rtol=1e-5)
    # extra keys are ignored, and the answer does not depend on the key order
    noisy = [
        {"id": i, "note": "x", **dict(reversed(list(row.items())))} for i, row in enumerate(rows)
    ]
    again = Client().post("/predict", json={"data": noisy}).get_json()
    assert again == response.get_json()


@pytest.mark.parametrize(
    "removed",
    [
        ["Precio_leche_shift3_mean"],
        ["Maule_shift3_mean"],
        ["Precio_leche_shift3_mean", "Maule_shift3_mean", "Coquimbo_shift3_mean"],
    ],
)
def test_an_old_row_missing_features_hears_which(
    on_real: tuple[Settings, dict[str, Any]], removed: list[str]
) -> None:
    """The nearest model is the one the row has the largest share of: here the legacy one."""
    _, doc = on_real
    legacy = doc["models"]["legacy"]["features"]
    row = legacy_rows()[3]
    assert all(name in row and name in legacy for name in removed)
    for name in removed:
        del row[name]
    response = Client().post("/predict", json={"data": [next_row(doc), row]})
    assert response.status_code == 400
    body = response.get_json()
    assert "nearest is the legacy model" in body["error"], body["error"]
    assert body["error"].startswith("row 1 ")
    in_order = [f for f in legacy if f in removed]
    assert body["error"].endswith(f"which also needs {len(removed)}: " + ", ".join(in_order))
    assert [d["field"] for d in body["details"]] == in_order
    assert {d["row"] for d in body["details"]} == {1}


def test_every_missing_feature_is_in_the_details(
    on_real: tuple[Settings, dict[str, Any]],
) -> None:
    """The message shows the first few; the details name all of them, however many."""
    _, doc = on_real
    legacy = doc["models"]["legacy"]["features"]
    gone = legacy[: len(legacy) // 3]  # the row keeps two thirds of the legacy model's
    assert len(gone) > 5
    row = {k: v for k, v in legacy_rows()[0].items() if k not in gone}
    body = Client().post("/predict", json={"data": [row]}).get_json()
    assert f"nearest is the legacy model, which also needs {len(gone)}: " in body["error"]
    assert body["error"].endswith(", ".join(gone[:5]) + ", ...")
    assert [d["field"] for d in body["details"]] == gone


def test_forecast_rows_equal_the_forecast_pipeline(
    on_real: tuple[Settings, dict[str, Any]],
) -> None:
    settings, doc = on_real
    rows = perturbed(next_row(doc), 25)
    response = Client().post("/predict", json={"data": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Model"] == "forecast"
    np.testing.assert_allclose(
        response.get_json(), skops_prices(settings, doc, "forecast", rows), rtol=1e-5
    )


def test_mixed_batch_keeps_row_order(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    settings, doc = on_sample
    new = perturbed(next_row(doc), 6, seed=1)
    old = legacy_rows()[:5]
    rows = [new[0], old[0], old[1], new[1], new[2], old[2], new[3], old[3], old[4], new[4], new[5]]
    client = Client()
    response = client.post("/predict", json={"data": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Model"] == "forecast,legacy"
    one_by_one = [client.post("/predict", json={"data": [row]}).get_json()[0] for row in rows]
    assert response.get_json() == one_by_one
    np.testing.assert_allclose(
        [response.get_json()[i] for i in (0, 3, 4, 6, 9, 10)],
        onnx_prices(settings, doc, "forecast", new),
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        [response.get_json()[i] for i in (1, 2, 5, 7, 8)],
        onnx_prices(settings, doc, "legacy", old),
        rtol=1e-9,
    )


def test_the_typed_path_agrees_with_the_full_checks(
    trained_sample: tuple[Settings, dict[str, Any]],
) -> None:
    """Large bodies are decoded by type (rows.py), small ones parsed whole: the same prices,
    and the same refusals, naming the same row and field."""
    settings, _ = trained_sample
    loaded = snapshot.load(settings)
    assert loaded is not None
    doc = manifest(settings)
    new, old = perturbed(next_row(doc), 6, seed=2), legacy_rows()[:5]
    noisy = [{"id": "x", "note": None, "nested": [{"a": 1}], **old[0]}]
    many = new * 200  # rows smaller than their structs: decoded a chunk at a time
    for rows in (new, old, [new[0], old[0], new[1], old[1]], noisy, many):
        body = orjson.dumps({"data": rows})
        fast = validation.fast_scores(loaded, body, 2000)
        full = validation.score_rows(loaded, orjson.loads(body), 2000)
        assert fast[1] == full[1]
        np.testing.assert_array_equal(fast[0], full[0])
    first = doc["models"]["forecast"]["features"][0]
    refused = {
        b"": 400,
        b'{"data": [': 400,
        b"[" * 100_000 + b"]" * 100_000: 400,
        b'{"data": []}': 400,
        b'{"rows": []}': 400,
        b'{"data": {}}': 400,
        b"[]": 400,
        orjson.dumps({"data": [{**new[0], first: True}]}): 400,
        orjson.dumps({"data": [{**new[0], first: None}]}): 400,
        orjson.dumps({"data": [{**new[0], first: "1.5"}]}): 400,
        orjson.dumps({"data": [{**new[0], first: [1.5]}]}): 400,
        orjson.dumps({"data": [{"x": 1.0}]}): 400,
        orjson.dumps({"data": [new[0], 3]}): 400,
        orjson.dumps({"data": [*many, {"x": 1.0}]}): 400,  # the last row, in the last chunk
        orjson.dumps({"data": new * 20}): 413,  # over the 100 rows allowed below
    }
    for body, status in refused.items():
        with pytest.raises(MilkPriceError) as typed:
            validation.fast_scores(loaded, body, 100 if status == 413 else 2000)
        with pytest.raises(MilkPriceError) as whole:
            validation.score_rows(loaded, parse_json(body), 100 if status == 413 else 2000)
        assert typed.value.status == whole.value.status == status, (body[:80], typed.value)
        if whole.value.message.startswith("the body is not valid JSON"):
            assert typed.value.message.startswith("the body is not valid JSON"), typed.value
        else:
            assert typed.value.details == whole.value.details, (body[:80], typed.value)


def test_forecast_is_the_path_s_first_month(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    """Next month's forecast is the path's (a model from before the path: test_predict_path)."""
    _, doc = on_sample
    client = Client()
    response = client.get("/forecast")
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["month"] == doc["next"]["month"] == "2021-03"
    assert answer["model_version"] == doc["version"] == response.headers["X-Model-Version"]
    first = doc["path"]["months"][0]
    assert answer["price"] == first["price"] and answer["source"] == "path"
    # its 80% interval, the path's one month ahead
    assert answer["interval"] == {"level": 0.8, "lower": first["lower"], "upper": first["upper"]}
    assert answer["interval"]["lower"] < answer["price"] < answer["interval"]["upper"]
    # HEAD answers the same headers without a body
    head = client.open("/forecast", "HEAD")
    assert head.status_code == 200 and head.data == b""
