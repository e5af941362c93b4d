"""The predict function end to end against the real fake-gcs-server.

Every answer the function gives in these tests goes through ``Client``, which checks it
against the OpenAPI document: a documented status, the documented headers, a body valid
under the documented schema. Storage is never mocked.
"""

from __future__ import annotations

import csv
import html
import inspect
import io
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import jsonschema
import numpy as np
import orjson
import pytest

from milkprice import contract, store
from milkprice.local import emulator
from milkprice.predict import cache, openapi, snapshot, validation
from milkprice.settings import Settings
from milkprice.train import artifacts
from tests.conftest import ROOT, SHARED

SOURCE = str(ROOT / "functions" / "predict" / "main.py")
TRAIN_SOURCE = str(ROOT / "functions" / "train" / "main.py")
SPEC = openapi.document()
TEMPLATES = [
    (re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$"), path) for path in SPEC["paths"]
]
LEGACY_X = SHARED / "legacy-features" / "X.csv"

# ---------------------------------------------------------------- helpers


def _validate(doc: Any, schema: dict[str, Any]) -> None:
    root = {**schema, "components": SPEC["components"]}
    jsonschema.Draft202012Validator(root).validate(doc)


def template_of(path: str) -> str | None:
    path = path.split("?", 1)[0].rstrip("/") or "/"
    for pattern, template in TEMPLATES:
        if pattern.match(path):
            return template
    return None


def conform(method: str, path: str, response: Any) -> tuple[str | None, str, int]:
    """Check one answer against the OpenAPI document; never a 5xx but a documented 503."""
    status = response.status_code
    template = template_of(path)
    op = SPEC["paths"].get(template, {}).get("get" if method == "HEAD" else method.lower())
    if op is None:  # a path or method the document does not list
        assert status in (404, 405, 413), (method, path, status, response.data[:300])
        assert response.mimetype == "application/json"
        if method != "HEAD":
            _validate(orjson.loads(response.data), {"$ref": "#/components/schemas/Error"})
        if status == 405:
            assert response.headers["Allow"]
        return template, method, status
    assert str(status) in op["responses"], (method, path, status, response.data[:300])
    documented = op["responses"][str(status)]
    for header in documented.get("headers", {}):
        assert response.headers.get(header), (method, path, status, header)
    content = documented.get("content")
    if content is None:
        assert response.data == b""
    else:
        assert response.mimetype in content, (method, path, status, response.mimetype)
        schema = content[response.mimetype].get("schema")
        if schema and method != "HEAD":
            _validate(orjson.loads(response.data), schema)
    return template, method, status


class Client:
    """The function's test client; every answer is checked against the OpenAPI document."""

    def __init__(self) -> None:
        self.app = functions_framework.create_app("predict", SOURCE, "http")
        self.inner = self.app.test_client()
        self.seen: set[tuple[str | None, str, int]] = set()

    def open(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        response = self.inner.open(path, method=method, **kwargs)
        self.seen.add(conform(method, path, response))
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "GET", **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "POST", **kwargs)


class Stalled(io.RawIOBase):
    """A request body that sends its first bytes, then stops, as a socket past its deadline."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.first:
            raise TimeoutError("timed out")
        n = min(len(buffer), len(self.first))
        buffer[:n], self.first = self.first[:n], self.first[n:]
        return n


@pytest.fixture(autouse=True)
def _fresh_process() -> Iterator[None]:
    """Each test starts as a new process would: no cache, settings read again."""
    cache.reset()
    yield
    cache.reset()


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Log records of the predict function."""
    found: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("milkprice.predict")
    logger.addHandler(handler)
    yield found
    logger.removeHandler(handler)


def pointer(settings: Settings) -> dict[str, Any]:
    found = contract.read_pointer(settings)
    assert found is not None
    return dict(contract.to_builtins(found[0]))


def manifest(settings: Settings, version: str | None = None) -> dict[str, Any]:
    version = version or pointer(settings)["version"]
    return dict(contract.to_builtins(contract.read_manifest(settings, version)))


def artifact(settings: Settings, version: str, name: str) -> bytes:
    blob = store.read(settings, store.model_path(version, name))
    assert blob is not None
    return blob.data


def clone(
    source: Settings,
    target: Settings,
    new_version: str,
    *,
    corrupt: str | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Copy the serving version of ``source`` into ``target`` under a new name."""
    version = pointer(source)["version"]
    prefix = store.model_path(version, "")
    for name, _ in store.list_names(source, prefix):
        file = name.removeprefix(prefix)
        data = artifact(source, version, file)
        if file == "manifest.json":
            doc = json.loads(data)
            doc["version"] = new_version
            if edit:
                edit(doc)
            data = json.dumps(doc).encode()
        if file == corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        store.write(target, store.model_path(new_version, file), data)
    return new_version


def promote(settings: Settings, version: str) -> None:
    seen = contract.read_pointer(settings)
    other = contract.promote(settings, version, f"run-{version}", seen[1] if seen else None)
    assert other is None, f"not promoted: {other} was"


def legacy_rows() -> list[dict[str, Any]]:
    if not LEGACY_X.is_file():
        pytest.skip(f"the legacy features are not at {LEGACY_X}")
    with LEGACY_X.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def next_row(doc: dict[str, Any]) -> dict[str, float]:
    return dict(doc["next"]["features"])


def perturbed(row: dict[str, float], n: int, seed: int = 0) -> list[dict[str, float]]:
    """``n`` plausible rows around one: every value but the month dummies moved by ~5 %."""
    rng = np.random.default_rng(seed)
    return [
        {
            k: v if k.startswith("mes_") else v * (1 + 0.05 * rng.standard_normal())
            for k, v in row.items()
        }
        for _ in range(n)
    ]


def onnx_prices(
    settings: Settings, doc: dict[str, Any], role: str, rows: list[dict[str, Any]]
) -> np.ndarray:
    entry = doc["models"][role]
    X = np.array([[row[f] for f in entry["features"]] for row in rows], dtype=np.float64)
    return artifacts.onnx_predict(artifact(settings, doc["version"], entry["onnx"]), X)


def skops_prices(
    settings: Settings, doc: dict[str, Any], role: str, rows: list[dict[str, Any]]
) -> np.ndarray:
    entry = doc["models"][role]
    X = np.array([[row[f] for f in entry["features"]] for row in rows], dtype=np.float64)
    pipeline = artifacts.from_skops(artifact(settings, doc["version"], entry["skops"]))
    return np.ravel(pipeline.predict(X))


def wait_for_version(client: Client, version: str, within: float) -> float:
    """Seconds until ``/forecast`` answers from ``version``; fails after ``within``."""
    start = time.monotonic()
    while True:
        response = client.get("/forecast")
        if response.status_code == 200 and response.get_json()["model_version"] == version:
            return time.monotonic() - start
        assert time.monotonic() - start < within, (version, response.get_json())
        time.sleep(0.02)


# ---------------------------------------------------------------- no model yet


def test_no_model_yet_is_503_with_retry_after(settings: Settings) -> None:
    client = Client()
    for path in ("/", "/forecast", "/backtest.png", "/v2/health/ready", "/v2/models/forecast"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert int(response.headers["Retry-After"]) >= 1
        assert "promoted" in response.get_json()["error"]
    response = client.post("/predict", json={"data": [{"a": 1.0}]})
    assert response.status_code == 503 and response.headers["Retry-After"]
    # liveness, server metadata and the API description need no model
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2").get_json()["name"] == "milk-price"
    assert client.get("/openapi.json").status_code == 200


# ---------------------------------------------------------------- predictions


@pytest.fixture
def on_sample(
    trained_sample: tuple[Settings, dict[str, Any]], use_bucket: Callable[[Settings], None]
) -> tuple[Settings, dict[str, Any]]:
    """The function reads the sample-trained bucket: its settings and serving manifest."""
    settings, _ = trained_sample
    use_bucket(settings)
    return settings, manifest(settings)


@pytest.fixture
def on_real(
    trained_real: tuple[Settings, dict[str, Any]], use_bucket: Callable[[Settings], None]
) -> tuple[Settings, dict[str, Any]]:
    """The function reads the bucket trained on the real data: settings and serving manifest."""
    settings, _ = trained_real
    use_bucket(settings)
    return settings, manifest(settings)


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


def test_the_fast_path_agrees_with_the_full_checks(
    trained_sample: tuple[Settings, dict[str, Any]],
) -> None:
    settings, _ = trained_sample
    loaded = snapshot.load(settings)
    assert loaded is not None
    doc = manifest(settings)
    new, old = perturbed(next_row(doc), 6, seed=2), legacy_rows()[:5]
    noisy = [{"id": "x", "note": None, "nested": [{"a": 1}], **old[0]}]
    for rows in (new, old, [new[0], old[0], new[1], old[1]], noisy):
        body = orjson.dumps({"data": rows})
        fast = validation.fast_scores(loaded, body, 100)
        assert fast is not None  # valid bodies take it
        full = validation.score_rows(loaded, orjson.loads(body), 100)
        assert fast[1] == full[1]
        np.testing.assert_array_equal(fast[0], full[0])
    # everything that needs an error message is left to the full checks
    first = doc["models"]["forecast"]["features"][0]
    refused = [
        b"",
        b'{"data": [',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"data": []}',
        b'{"rows": []}',
        orjson.dumps({"data": [{**new[0], first: True}]}),
        orjson.dumps({"data": [{**new[0], first: None}]}),
        orjson.dumps({"data": [{**new[0], first: "1.5"}]}),
        orjson.dumps({"data": [{**new[0], first: [1.5]}]}),
        orjson.dumps({"data": [{"x": 1.0}]}),
        orjson.dumps({"data": [new[0], 3]}),
        orjson.dumps({"data": new * 20}),  # over the 100 rows allowed below
    ]
    for body in refused:
        assert validation.fast_scores(loaded, body, 100) is None, body[:80]


def test_forecast_is_the_onnx_model_on_the_next_row(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    settings, doc = on_sample
    client = Client()
    response = client.get("/forecast")
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["month"] == doc["next"]["month"] == "2021-03"
    assert answer["model_version"] == doc["version"] == response.headers["X-Model-Version"]
    expected = onnx_prices(settings, doc, "forecast", [next_row(doc)])[0]
    assert answer["price"] == pytest.approx(expected, rel=1e-12)
    # the 80% interval around it, from the manifest's conformal ratios
    spec = doc["models"]["forecast"]["interval"]
    assert answer["interval"] == {
        "level": 0.8,
        "lower": pytest.approx(expected * (1 + spec["lower_ratio"])),
        "upper": pytest.approx(expected * (1 + spec["upper_ratio"])),
    }
    assert answer["interval"]["lower"] < answer["price"] < answer["interval"]["upper"]
    # HEAD answers the same headers without a body
    head = client.open("/forecast", "HEAD")
    assert head.status_code == 200 and head.data == b""


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
    assert answer["outputs"][0]["data"] == [client.get("/forecast").get_json()["price"]]


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


# ---------------------------------------------------------------- client errors


@dataclass
class Sample:
    forecast: list[str]
    legacy: list[str]
    row: dict[str, float]

    def tensor(self, **changes: Any) -> dict[str, Any]:
        tensor = {
            "name": "X",
            "shape": [1, len(self.forecast)],
            "datatype": "FP64",
            "data": [self.row[f] for f in self.forecast],
        }
        return {"inputs": [{**tensor, **changes}]}

    def rows(self, n: int) -> list[dict[str, float]]:
        return [dict(self.row) for _ in range(n)]


@pytest.fixture
def sample(on_sample: tuple[Settings, dict[str, Any]]) -> Sample:
    _, doc = on_sample
    return Sample(
        doc["models"]["forecast"]["features"], doc["models"]["legacy"]["features"], next_row(doc)
    )


MAX_ROWS = 5
MAX_BYTES = 20_000
JSON = "application/json"
Case = tuple[str, str, dict[str, Any], int, dict[str, Any] | None]
P = "/predict"
INFER = "/v2/models/forecast/infer"


def post(path: str, kw: dict[str, Any], status: int, **detail: Any) -> Case:
    return "POST", path, kw, status, detail or None


def raw(body: bytes | str, kind: str = JSON) -> dict[str, Any]:
    return {"data": body, "content_type": kind}


def rows_with(s: Sample, n: int, i: int, field: str, value: Any = ...) -> dict[str, Any]:
    """``n`` good rows, row ``i`` with ``field`` set to ``value`` (or removed)."""
    rows = s.rows(n)
    if value is ...:
        del rows[i][field]
    else:
        rows[i][field] = value
    return {"json": {"data": rows}}


def values(s: Sample, first: Any = None, last: Any = None) -> list[Any]:
    data: list[Any] = [s.row[f] for f in s.forecast]
    data[0] = data[0] if first is None else first
    data[-1] = data[-1] if last is None else last
    return data


CHUNKED = {"wsgi.input_terminated": True}
CASES: dict[str, Callable[[Sample], Case]] = {
    # /predict: the body
    "malformed JSON": lambda s: post(P, raw(b'{"data": ['), 400),
    "NaN literal": lambda s: post(P, raw(b'{"data": [{"a": NaN}]}'), 400),
    "Infinity literal": lambda s: post(P, raw(b'{"data": [{"a": -Infinity}]}'), 400),
    "empty body": lambda s: post(P, raw(b""), 400),
    "invalid UTF-8": lambda s: post(P, raw(b'{"data": ["\xff"]}'), 400),
    "deep nesting": lambda s: post(P, raw(b"[" * 5000 + b"]" * 5000), 400),
    "body not an object": lambda s: post(P, {"json": s.rows(1)}, 400, field="data"),
    "data missing": lambda s: post(P, {"json": {"rows": []}}, 400, field="data", problem="missing"),
    "data not a list": lambda s: post(P, {"json": {"data": s.row}}, 400, field="data"),
    "data empty": lambda s: post(P, {"json": {"data": []}}, 400, field="data"),
    "row not an object": lambda s: post(P, {"json": {"data": [s.row, [1.0]]}}, 400, row=1),
    "missing feature": lambda s: post(
        P, rows_with(s, 3, 2, s.forecast[3]), 400, row=2, field=s.forecast[3]
    ),
    "fits no model": lambda s: post(
        P, {"json": {"data": [{"x": 1.0}]}}, 400, row=0, field=s.forecast[0]
    ),
    "string value": lambda s: post(
        P, rows_with(s, 2, 1, s.forecast[2], "12.5"), 400, row=1, field=s.forecast[2]
    ),
    "boolean value": lambda s: post(
        P, rows_with(s, 2, 1, s.forecast[0], True), 400, row=1, field=s.forecast[0]
    ),
    "null value": lambda s: post(
        P, rows_with(s, 2, 0, s.forecast[1], None), 400, row=0, field=s.forecast[1]
    ),
    "array value": lambda s: post(
        P, rows_with(s, 1, 0, s.forecast[1], [1.0]), 400, row=0, field=s.forecast[1]
    ),
    "no finite price": lambda s: post(
        P, {"json": {"data": [s.row, dict.fromkeys(s.forecast, 1e308)]}}, 400, row=1
    ),
    "too many rows": lambda s: post(P, {"json": {"data": s.rows(MAX_ROWS + 1)}}, 413),
    "body above the limit": lambda s: post(P, raw(b"[" + b" " * MAX_BYTES + b"]"), 413),
    "body above the limit, no Content-Length": lambda s: post(
        P,
        {
            "input_stream": io.BytesIO(b" " * (MAX_BYTES + 10)),
            "content_type": JSON,
            "environ_overrides": CHUNKED,
        },
        413,
    ),
    "text/plain": lambda s: post(P, raw(json.dumps({"data": s.rows(1)}), "text/plain"), 415),
    "form": lambda s: post(P, {"data": {"data": "1"}}, 415),
    # accepted: JSON with parameters, a +json type, no Content-Type at all
    "charset": lambda s: post(
        P, raw(json.dumps({"data": s.rows(1)}), JSON + "; charset=utf-8"), 200
    ),
    "+json": lambda s: post(P, raw(json.dumps({"data": s.rows(1)}), "application/x+json"), 200),
    "no Content-Type": lambda s: post(P, {"data": json.dumps({"data": s.rows(1)})}, 200),
    # V2
    "V2 inputs missing": lambda s: post(INFER, {"json": {"id": "1"}}, 400, field="inputs"),
    "V2 two inputs": lambda s: post(
        INFER, {"json": {"inputs": s.tensor()["inputs"] * 2}}, 400, field="inputs"
    ),
    "V2 body not an object": lambda s: post(INFER, {"json": [1.0]}, 400, field="inputs"),
    "V2 wrong width": lambda s: post(
        INFER, {"json": s.tensor(shape=[1, len(s.forecast) + 1])}, 400, field="inputs[0].shape"
    ),
    "V2 shape not 2-D": lambda s: post(
        INFER, {"json": s.tensor(shape=[len(s.forecast)])}, 400, field="inputs[0].shape"
    ),
    "V2 no rows": lambda s: post(
        INFER, {"json": s.tensor(shape=[0, len(s.forecast)], data=[])}, 400, field="inputs[0].shape"
    ),
    "V2 datatype": lambda s: post(
        INFER, {"json": s.tensor(datatype="INT32")}, 400, field="inputs[0].datatype"
    ),
    "V2 size mismatch": lambda s: post(
        INFER, {"json": s.tensor(shape=[2, len(s.forecast)])}, 400, field="inputs[0].data"
    ),
    "V2 data not a list": lambda s: post(
        INFER, {"json": s.tensor(data="1,2")}, 400, field="inputs[0].data"
    ),
    "V2 ragged nesting": lambda s: post(
        INFER, {"json": s.tensor(data=[[1.0], 2.0])}, 400, field="inputs[0].data"
    ),
    "V2 string value": lambda s: post(
        INFER, {"json": s.tensor(data=values(s, last="x"))}, 400, row=0, field=s.forecast[-1]
    ),
    "V2 FP32 overflow": lambda s: post(
        INFER,
        {"json": s.tensor(datatype="FP32", data=values(s, first=1e39))},
        400,
        row=0,
        field=s.forecast[0],
    ),
    "V2 too many rows": lambda s: post(
        INFER, {"json": s.tensor(shape=[MAX_ROWS + 1, len(s.forecast)])}, 413
    ),
    "V2 unknown model": lambda s: post("/v2/models/nope/infer", {"json": s.tensor()}, 404),
    "V2 text/plain": lambda s: post(INFER, raw(json.dumps(s.tensor()), "text/plain"), 415),
    # routes and methods
    "GET /predict": lambda s: ("GET", P, {}, 405, None),
    "POST /forecast": lambda s: ("POST", "/forecast", {"json": {}}, 405, None),
    "DELETE /": lambda s: ("DELETE", "/", {}, 405, None),
    "PUT infer": lambda s: ("PUT", INFER, {"json": s.tensor()}, 405, None),
    "unknown route": lambda s: ("GET", "/nope", {}, 404, None),
    "too deep a route": lambda s: ("GET", INFER + "/more", {}, 404, None),
    "empty model name": lambda s: ("GET", "/v2/models//ready", {}, 404, None),
}
ALLOW = {
    "GET /predict": "POST",
    "POST /forecast": "GET, HEAD",
    "DELETE /": "GET, HEAD",
    "PUT infer": "POST",
}


@pytest.mark.parametrize("case", list(CASES))
def test_client_errors(case: str, sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILKPRICE_MAX_ROWS", str(MAX_ROWS))
    monkeypatch.setenv("MILKPRICE_MAX_BODY_BYTES", str(MAX_BYTES))
    method, path, kwargs, status, detail = CASES[case](sample)
    response = Client().open(path, method, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 200:
        assert len(response.get_json()) == 1
        return
    body = response.get_json()
    assert isinstance(body["error"], str) and body["error"]
    if detail is not None:
        assert any(detail.items() <= d.items() for d in body["details"]), body
        if "row" in detail:
            assert f"row {detail['row']}" in body["error"]
    if case in ALLOW:
        assert response.headers["Allow"] == ALLOW[case]


def test_a_missing_field_names_every_missing_field(sample: Sample) -> None:
    row = {k: v for k, v in sample.row.items() if k not in sample.forecast[:3]}
    body = Client().post("/predict", json={"data": [sample.row, row]}).get_json()
    assert [(d["row"], d["field"]) for d in body["details"]] == [
        (1, f) for f in sample.forecast[:3]
    ]


def test_the_length_is_checked_before_reading(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A declared length above the limit is refused without reading, on any route."""
    monkeypatch.setenv("MILKPRICE_MAX_BODY_BYTES", "100")
    client = Client()

    class Unreadable(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("the body was read")

        readline = read1 = read  # type: ignore[assignment]

        def readinto(self, buffer: Any) -> int:
            raise AssertionError("the body was read")

    for path in ("/predict", "/nope", INFER):
        response = client.post(
            path,
            input_stream=Unreadable(),
            content_type=JSON,
            environ_overrides={"CONTENT_LENGTH": "101"},
        )
        assert response.status_code == 413, response.get_data(as_text=True)


def test_nothing_a_client_sends_is_a_500(sample: Sample) -> None:
    client = Client()
    bodies: list[bytes] = [
        b"1",
        b'"x"',
        b"null",
        b"true",
        b"[]",
        b"{}",
        b'{"data": null}',
        b'{"data": [[]]}',
        b'{"data": [{}]}',
        b'{"data": [null]}',
        b'{"data": [{"a": {"b": 1}}]}',
        b'{"data": [' + json.dumps(sample.row).encode() + b"]",
        b"\x00\x01",
        b'{"data": [' + json.dumps({k: 10**30 for k in sample.forecast}).encode() + b"]}",
        b'{"data": [' + json.dumps({k: -1e-320 for k in sample.forecast}).encode() + b"]}",
        b'{"inputs": [{"shape": [1, 1e30], "datatype": "FP64", "data": []}]}',
        b'{"inputs": [{"shape": [-1, 2], "datatype": "FP64", "data": []}]}',
        b'{"inputs": [{"shape": null, "datatype": null, "data": null}]}',
        b'{"inputs": [{"shape": [1, true], "datatype": "FP64", "data": [1]}]}',
        b'{"inputs": [1]}',
        b'{"inputs": {}}',
        b'{"id": [], "inputs": []}',
    ]
    for path in ("/predict", INFER, "/v2/models/legacy/infer", "/v2/models/%00/infer"):
        for body in bodies:
            response = client.post(path, data=body, content_type=JSON)
            assert response.status_code < 500, (path, body, response.data)
    for path in (
        "/%00",
        "/v2/models/a%2Fb",
        "/v2/",
        "/predict/",
        "/forecast?x=1",
        "/" + "a" * 5000,
    ):
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            response = client.open(path, method)
            assert response.status_code < 500, (method, path, response.data)


# ---------------------------------------------------------------- the model cache


def test_a_promoted_model_is_served_within_the_interval(
    settings: Settings,
    trained_sample: tuple[Settings, dict[str, Any]],
    trained_real: tuple[Settings, dict[str, Any]],
    records: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.2
    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", str(interval))
    client = Client()
    assert client.get("/forecast").status_code == 503
    first = clone(trained_sample[0], settings, "v1-sample")
    promote(settings, first)
    time.sleep(interval)
    assert client.get("/forecast").get_json()["model_version"] == first
    # a new version, another model: served within the interval (plus its own load)
    second = clone(trained_real[0], settings, "v2-real")
    promote(settings, second)
    assert wait_for_version(client, second, within=interval + 2.0) < interval + 1.0
    doc = manifest(settings, second)
    rows = perturbed(next_row(doc), 3)
    np.testing.assert_allclose(
        client.post("/predict", json={"data": rows}).get_json(),
        onnx_prices(settings, doc, "forecast", rows),
        rtol=1e-9,
    )
    assert client.get("/forecast").get_json()["price"] == pytest.approx(
        onnx_prices(settings, doc, "forecast", [next_row(doc)])[0]
    )
    assert client.get("/backtest.png").data == artifact(settings, second, "backtest.png")
    served = [r for r in records if r.getMessage().startswith("serving model version")]
    assert [getattr(r, "version", None) for r in served] == [first, second]

    # then broken promotions: each is logged, and the old model keeps serving
    def broken(make: Callable[[], object], problem: str) -> None:
        records.clear()
        make()
        time.sleep(interval * 1.5)
        for _ in range(3):
            response = client.get("/forecast")
            assert response.status_code == 200
            assert response.get_json()["model_version"] == second, problem
            time.sleep(interval / 2)
        assert client.get("/v2/health/ready").status_code == 200
        errors = [r for r in records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in records]  # not retried on every check
        assert getattr(errors[0], "version", None) == second and problem in errors[0].getMessage()

    broken(
        lambda: promote(
            settings, clone(trained_sample[0], settings, "v3-bad-onnx", corrupt="forecast.onnx")
        ),
        "forecast.onnx has sha256",
    )
    broken(
        lambda: promote(
            settings, clone(trained_sample[0], settings, "v4-bad-chart", corrupt="backtest.png")
        ),
        "backtest.png has sha256",
    )
    broken(
        lambda: promote(
            settings,
            clone(trained_sample[0], settings, "v5-no-models", edit=lambda d: d.pop("models")),
        ),
        "missing required field `models`",
    )
    broken(lambda: promote(settings, "v6-missing"), "manifest.json is missing")
    broken(
        lambda: store.write(settings, store.POINTER, b"{not json", "application/json"),
        "names no version",
    )
    broken(
        lambda: store.write(
            settings,
            store.POINTER,
            b'{"version": "../v2-real", "run_id": "r", "promoted": "2026-01-01T00:00:00Z"}',
        ),
        "no valid version",
    )
    # and a good one is served again
    last = clone(trained_sample[0], settings, "v7-sample")
    promote(settings, last)
    wait_for_version(client, last, within=interval + 2.0)


def test_the_pointer_is_checked_at_most_once_per_interval(
    settings: Settings,
    trained_sample: tuple[Settings, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "0.5")
    promote(settings, clone(trained_sample[0], settings, "v1"))
    checks: list[float] = []
    real = cache.pointer_token

    def counted(s: Settings) -> str | None:  # counts, and asks the real bucket
        checks.append(time.monotonic())
        return real(s)

    monkeypatch.setattr(cache, "pointer_token", counted)
    client = Client()
    row = next_row(manifest(settings))
    start = time.monotonic()
    requests = 0
    while time.monotonic() - start < 1.6:
        assert client.post("/predict", json={"data": [row]}).status_code == 200
        requests += 1
    assert requests > 50
    assert 2 <= len(checks) <= 5, checks
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(checks))


def test_a_long_interval_keeps_the_loaded_model(
    settings: Settings,
    trained_sample: tuple[Settings, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "60")
    promote(settings, clone(trained_sample[0], settings, "v1"))
    client = Client()
    assert client.get("/forecast").get_json()["model_version"] == "v1"
    promote(settings, clone(trained_sample[0], settings, "v2"))
    time.sleep(0.3)
    for _ in range(20):
        assert client.get("/forecast").get_json()["model_version"] == "v1"


def test_the_bucket_away(
    tmp_path: Path,
    trained_sample: tuple[Settings, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Down before any model: 503 with Retry-After. Down later: the loaded model serves on."""
    port = emulator.free_port()
    root = tmp_path / "gcs"
    proc = emulator.start(root, port)
    try:
        # a client of its own (another project), on an emulator this test can stop
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url("127.0.0.1", port))
        private = Settings(bucket="away", project=f"away-{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("MILKPRICE_PROJECT", private.project)
        monkeypatch.setenv("MILKPRICE_BUCKET", private.bucket)
        monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "0.2")
        store.ensure_bucket(private)
        emulator.stop(proc)
        client = Client()
        response = client.get("/forecast")
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert "unavailable" in response.get_json()["error"]
        proc = emulator.start(root, port)
        version = clone(trained_sample[0], private, "v1")
        promote(private, version)
        wait_for_version(client, version, within=2.0)
        emulator.stop(proc)
        time.sleep(0.3)
        # the one request that checks waits for the bucket, briefly; the others serve meanwhile
        checking: list[Any] = []
        other = client.app.test_client()  # test clients are not shared between threads
        thread = threading.Thread(target=lambda: checking.append(other.get("/forecast")))
        started = time.monotonic()
        thread.start()
        time.sleep(0.1)
        assert thread.is_alive()
        for _ in range(10):
            start = time.monotonic()
            response = client.get("/forecast")
            assert response.status_code == 200 and time.monotonic() - start < 1.0
            assert response.get_json()["model_version"] == version
        thread.join(timeout=30)
        assert time.monotonic() - started < 3.0  # not store's 10 s of retries
        assert checking[0].status_code == 200
        assert checking[0].get_json()["model_version"] == version
        assert client.get("/v2/health/ready").status_code == 200
    finally:
        emulator.stop(proc)


# ---------------------------------------------------------------- the landing page


def test_landing_page(
    on_sample: tuple[Settings, dict[str, Any]],
) -> None:
    settings, doc = on_sample
    client = Client()
    response = client.get("/", base_url="http://milk.example:8123")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    forecast = client.get("/forecast").get_json()
    assert doc["version"] in page and doc["created"] in page
    assert f"Forecast for {forecast['month']}" in page and f"{forecast['price']:.2f}" in page
    for role in ("forecast", "legacy"):
        entry = doc["models"][role]
        assert entry["candidate"] in page
        assert f"{entry['backtest']['rmse']:.3f}" in page
        assert " to ".join(entry["training_months"]) in page
    assert f"{doc['models']['forecast']['naive']['rmse']:.3f}" in page
    for name, entry in doc["inputs"].items():
        assert name in page and str(entry["token"]) in page
    assert "curl -s http://milk.example:8123/forecast" in page
    assert "curl -s -X POST http://milk.example:8123/predict" in page
    # the copy-paste examples work as printed
    body = re.search(r"/predict -H 'Content-Type: application/json' \\\n  -d '([^']*)'", page)
    assert body is not None
    example = json.loads(html.unescape(body.group(1)))
    assert client.post("/predict", json=example).get_json() == [forecast["price"]]
    # every resource it references is same-origin and answers 200
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert "backtest.png" in refs
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert "://" not in ref and not ref.startswith("//"), ref
        assert client.get("/" + ref.lstrip("/")).status_code == 200, ref
    chart = client.get("/backtest.png")
    assert chart.mimetype == "image/png" and chart.data == artifact(
        settings, doc["version"], "backtest.png"
    )
    assert (
        client.get("/backtest.png", headers={"If-None-Match": chart.headers["ETag"]}).status_code
        == 304
    )


# ---------------------------------------------------------------- the OpenAPI document


def _main_module_globals(client: Client) -> dict[str, Any]:
    view = client.app.view_functions["run"]
    return inspect.unwrap(view).__globals__  # the module create_app loaded


def test_openapi_describes_every_route(sample: Sample) -> None:
    client = Client()
    routes = _main_module_globals(client)["ROUTES"]
    served = client.get("/openapi.json", base_url="http://milk.example").get_json()
    assert served["servers"] == [{"url": "http://milk.example"}]
    assert served["openapi"].startswith("3.1")
    assert set(served["paths"]) == set(routes)
    for path, methods in routes.items():
        assert set(served["paths"][path]) == {m.lower() for m in methods}, path
    # every schema is valid JSON Schema and every reference resolves
    for name, schema in served["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert name
    text = json.dumps(served)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', text)):
        assert ref in served["components"]["schemas"], ref


def test_every_documented_answer_happens(
    settings: Settings,
    trained_sample: tuple[Settings, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each documented (path, method, status) is produced, and validates (see Client)."""
    documented = {
        (path, method.upper(), int(status))
        for path, ops in SPEC["paths"].items()
        for method, op in ops.items()
        for status in op["responses"]
    }
    seen: set[tuple[str | None, str, int]] = set()
    monkeypatch.setenv("MILKPRICE_MAX_ROWS", "3")
    tensor = {"inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}
    # an empty bucket: no model yet
    client = Client()
    for path in (
        "/",
        "/backtest.png",
        "/forecast",
        "/v2/health/ready",
        "/v2/models/forecast",
        "/v2/models/forecast/ready",
    ):
        client.get(path)
    client.post("/predict", json={"data": [{}]})
    client.post(INFER, json=tensor)
    seen |= client.seen
    # a model without a chart
    cache.reset()
    promote(
        settings,
        clone(trained_sample[0], settings, "no-chart", edit=lambda d: d["backtest"].pop("chart")),
    )
    client = Client()
    client.get("/backtest.png")
    seen |= client.seen
    # a model with everything
    cache.reset()
    os.environ["MILKPRICE_BUCKET"] = trained_sample[0].bucket
    doc = manifest(trained_sample[0])
    row = next_row(doc)
    width = len(doc["models"]["forecast"]["features"])
    good = {
        "inputs": [
            {
                "name": "X",
                "shape": [1, width],
                "datatype": "FP64",
                "data": [row[f] for f in doc["models"]["forecast"]["features"]],
            }
        ]
    }
    client = Client()
    for path in (
        "/",
        "/forecast",
        "/openapi.json",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/legacy",
        "/v2/models/nope",
        "/v2/models/forecast/ready",
        "/v2/models/nope/ready",
    ):
        client.get(path)
    etag = client.get("/backtest.png").headers["ETag"]
    client.get("/backtest.png", headers={"If-None-Match": etag})
    for path, ok in (("/predict", {"data": [row]}), (INFER, good)):
        client.post(path, json=ok)
        client.post(path, json={"data": [], "inputs": []})
        client.post(
            path, json={"data": [row] * 4, "inputs": [{**good["inputs"][0], "shape": [4, width]}]}
        )
        client.post(path, data="x", content_type="text/plain")
        stalled = client.post(
            path,
            content_type=JSON,
            environ_overrides={
                "wsgi.input": Stalled(b'{"data": ['),
                "wsgi.input_terminated": True,  # as gunicorn says: the stream as it is
                "CONTENT_LENGTH": "100",
            },
        )
        assert "the 100 bytes its Content-Length declared" in stalled.get_json()["error"]
    client.post("/v2/models/nope/infer", json=good)
    seen |= client.seen
    assert documented <= seen, documented - seen


# ---------------------------------------------------------------- the function's process


def test_serving_imports_no_pandas_or_sklearn(
    trained_sample: tuple[Settings, dict[str, Any]], gcs: str
) -> None:
    settings, _ = trained_sample
    doc = manifest(settings)
    code = f"""
import json, sys
import functions_framework
app = functions_framework.create_app("predict", {SOURCE!r}, "http")
response = app.test_client().post("/predict", json={{"data": [json.loads(sys.argv[1])]}})
assert response.status_code == 200, response.get_data(as_text=True)
top = {{m.split(".")[0] for m in sys.modules}}
heavy = sorted(top & {{"pandas", "sklearn", "scipy", "skl2onnx", "skops", "matplotlib", "onnx"}})
assert "pandas" not in sys.modules and "sklearn" not in sys.modules, heavy
print(json.dumps({{"prices": response.get_json(), "heavy": heavy}}))
"""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "STORAGE_EMULATOR_HOST": gcs,
        "MILKPRICE_BUCKET": settings.bucket,
    }
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(next_row(doc))],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == []
    assert answer["prices"] == pytest.approx(
        onnx_prices(settings, doc, "forecast", [next_row(doc)])
    )


def test_train_and_predict_apps_live_side_by_side(
    settings: Settings, trained_sample: tuple[Settings, dict[str, Any]]
) -> None:
    """create_app loads both sources as module "main"; each app keeps its own module."""
    train = functions_framework.create_app("train_http", TRAIN_SOURCE, "http").test_client()
    predict = Client()
    train_again = functions_framework.create_app("train_http", TRAIN_SOURCE, "http").test_client()
    assert train.get("/").status_code == 405  # the train function's own answer
    assert train_again.get("/").status_code == 405
    assert predict.get("/v2/health/live").status_code == 200
    assert predict.get("/predict").status_code == 405
    assert _main_module_globals(predict)["__file__"] == SOURCE


def test_pointer_checks_back_off_while_storage_fails() -> None:
    server = cache.Server(Settings(bucket="any", reload_seconds=2.0))
    assert server.delay() == 2.0  # nothing loaded: keep trying at the interval
    server._outages = 3
    assert server.delay() == 2.0
    server._loaded = object()  # type: ignore[assignment]
    server._outages = 0
    assert server.delay() == 2.0
    assert [server.delay() for server._outages in (1, 2, 3, 10)] == [4.0, 8.0, 16.0, 60.0]
