"""The KServe V2 inference protocol: infer equals /predict, metadata names the features."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from milkprice.predict.versions import KEPT
from milkprice.settings import Settings
from tests.support.buckets import clone, promote
from tests.support.openapi_client import Client
from tests.support.rows import legacy_rows, next_row, perturbed

pytestmark = pytest.mark.usefixtures("fresh_process")


def test_v2_infer_equals_predict(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    _, doc = on_sample
    client = Client()
    cases = {
        "forecast": perturbed(next_row(doc), 7, seed=2),
        "legacy": legacy_rows()[:9],
    }
    for role, rows in cases.items():
        features = doc["models"][role]["features"]
        matrix = [[row[f] for f in features] for row in rows]
        expected = client.post("/predict", json={"data": rows}).get_json()
        for name in (role, "milk-price") if role == "forecast" else (role,):
            for datatype in ("FP64", "FP32"):
                for data in (matrix, [v for r in matrix for v in r]):  # nested and flat
                    body = {
                        "id": f"req-{datatype}",
                        "inputs": [
                            {
                                "name": "X",
                                "shape": [len(rows), len(features)],
                                "datatype": datatype,
                                "data": data,
                            }
                        ],
                    }
                    response = client.post(f"/v2/models/{name}/infer", json=body)
                    assert response.status_code == 200, response.get_data(as_text=True)
                    answer = response.get_json()
                    assert answer["model_name"] == name
                    assert answer["model_version"] == doc["version"]
                    assert answer["id"] == f"req-{datatype}"
                    [output] = answer["outputs"]
                    assert output["name"] == "price" and output["datatype"] == "FP64"
                    assert output["shape"] == [len(rows), 1]
                    if datatype == "FP64":
                        assert output["data"] == expected
                    else:
                        np.testing.assert_allclose(output["data"], expected, rtol=1e-5)
    # any input name will do; no id, no id in the answer
    features = doc["models"]["forecast"]["features"]
    body = {
        "inputs": [
            {
                "name": "rows",
                "shape": [1, len(features)],
                "datatype": "FP64",
                "data": [next_row(doc)[f] for f in features],
            }
        ]
    }
    answer = client.post("/v2/models/forecast/infer", json=body).get_json()
    assert "id" not in answer
    assert (
        answer["outputs"][0]["data"]
        == client.post("/predict", json={"data": [next_row(doc)]}).get_json()
    )


def test_v2_metadata_lists_the_feature_names(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    _, doc = on_sample
    client = Client()
    for name, role in (("forecast", "forecast"), ("legacy", "legacy"), ("milk-price", "forecast")):
        meta = client.get(f"/v2/models/{name}").get_json()
        features = doc["models"][role]["features"]
        assert meta["name"] == name and meta["versions"] == [doc["version"]]
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "X", "datatype": "FP64", "shape": [-1, len(features)]}]
        assert meta["outputs"] == [{"name": "price", "datatype": "FP64", "shape": [-1, 1]}]
        assert meta["parameters"]["feature_names"] == features
        assert client.get(f"/v2/models/{name}/ready").get_json() == {"name": name, "ready": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/health/live").get_json() == {"live": True}
    server = client.get("/v2").get_json()
    assert server["name"] == "milk-price" and server["version"]
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        assert client.get(path).status_code == 404
    assert client.post("/v2/models/nope/infer", json={"inputs": []}).status_code == 404


def test_old_versions_load_on_first_use_verified_and_few_stay_loaded(
    settings: Settings, trained_sample: tuple[Settings, dict[str, Any]]
) -> None:
    """Versions by name: sha256-checked like the served one, at most KEPT others in memory."""
    source = trained_sample[0]
    old = [clone(source, settings, f"v{k}") for k in range(1, KEPT + 2)]
    corrupt = clone(source, settings, "v0-corrupt", corrupt="legacy.onnx")
    served = clone(source, settings, "v9-served")
    promote(settings, served)
    client = Client()

    def index() -> dict[str, tuple[str, str]]:
        entries = client.post("/v2/repository/index").get_json()
        return {
            e["version"]: (e["state"], e.get("reason", ""))
            for e in entries
            if e["name"] == "legacy"
        }

    assert index() == {
        served: ("READY", ""),
        **{
            v: ("UNAVAILABLE", "not loaded: a request that names this version loads it")
            for v in [*old, corrupt]
        },
    }
    for version in old:  # the first one asked for is the first dropped
        assert client.get(f"/v2/models/legacy/versions/{version}/ready").status_code == 200
    states = index()
    assert states[old[0]][0] == "UNAVAILABLE"
    assert [v for v in old if states[v][0] == "READY"] == old[1:]
    # asked for again, it is loaded again (and the least recently used goes)
    answer = client.get(f"/v2/models/legacy/versions/{old[0]}").get_json()
    assert answer["versions"][0] == served and set(answer["versions"]) == {served, corrupt, *old}
    assert index()[old[1]][0] == "UNAVAILABLE" and index()[old[0]][0] == "READY"
    # a version whose file is not what its manifest says is never served
    response = client.get(f"/v2/models/forecast/versions/{corrupt}/ready")
    assert response.status_code == 503, response.get_json()
    assert "legacy.onnx has sha256" in response.get_json()["error"]
    state, reason = index()[corrupt]
    assert state == "UNAVAILABLE" and "legacy.onnx has sha256" in reason
    unknown = client.get("/v2/models/forecast/versions/v404").get_json()
    assert unknown["error"].startswith(
        "no model version 'v404'; the versions are v9-served, v4, v3"
    )
