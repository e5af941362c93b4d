"""The landing page and the OpenAPI document: every documented answer happens, and conforms."""

from __future__ import annotations

import html
import io
import json
import os
import re
from typing import Any
from urllib.parse import urljoin

import jsonschema
import pytest

from milkprice import contract, store
from milkprice.errors import ConfigError
from milkprice.predict import cache
from milkprice.predict import routes as predict_routes
from milkprice.settings import Settings
from tests.support.buckets import artifact, clone, manifest, promote
from tests.support.openapi_client import INFER, JSON, SPEC, Client
from tests.support.prices import onnx_prices
from tests.support.rows import Sample, next_row

pytestmark = pytest.mark.usefixtures("fresh_process")


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
    # next month's row, priced by the forecast model (the forecast above is the path's)
    row_price = onnx_prices(settings, doc, "forecast", [next_row(doc)])
    assert client.post("/predict", json=example).get_json() == [pytest.approx(row_price[0])]
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


def _links(page: str) -> tuple[str, list[str]]:
    """The page's <base> and what its relative links resolve to."""
    [root] = re.findall(r'<base href="([^"]*)">', page)
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    return root, [urljoin(root, r) for r in refs if not r.startswith("data:") and r != root]


@pytest.mark.parametrize(
    ("headers", "script_name", "base"),
    [
        # Cloud Run, Container Apps, API Gateway: the scheme the client used
        ({"X-Forwarded-Proto": "https"}, "", "https://milk.internal:8080"),
        # a front end under a host and a path of its own that strips the path
        (
            {
                "X-Forwarded-Proto": "https,http",
                "X-Forwarded-Host": "milk.example.org, proxy.local",
                "X-Forwarded-Prefix": "/tools/milk/",
            },
            "",
            "https://milk.example.org/tools/milk",
        ),
        # the server mounted under a path (the WSGI SCRIPT_NAME, gunicorn's $SCRIPT_NAME)
        ({"X-Forwarded-Prefix": "/edge"}, "/milk", "http://milk.internal:8080/edge/milk"),
        # values of another shape are left out, never echoed into the page
        (
            {
                "X-Forwarded-Proto": "javascript",
                "X-Forwarded-Host": 'evil"><script>',
                "X-Forwarded-Prefix": "//evil.example",
            },
            "",
            "http://milk.internal:8080",
        ),
    ],
)
def test_links_follow_the_front_end(
    on_sample: tuple[Settings, dict[str, Any]],
    headers: dict[str, str],
    script_name: str,
    base: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MILKPRICE_TRUST_FORWARDED", "all")  # a front end sets all three
    client = Client()
    where = f"http://milk.internal:8080{script_name}/"
    page = client.get("/", base_url=where, headers=headers).get_data(as_text=True)
    assert f"curl -s {base}/forecast" in page
    assert f"curl -s -X POST {base}/predict" in page
    root, links = _links(page)
    prefix = base.split("://", 1)[1].partition("/")[2]
    assert root == ("/" + prefix).rstrip("/") + "/"
    # every link resolves under the prefix, with or without the page's final slash
    assert f"{root}backtest.png" in links and f"{root}openapi.json" in links
    for link in links:
        assert link.startswith(root), link
        inner = "/" + link.removeprefix(root)  # what the front end passes on
        assert client.get(inner, base_url=where.rstrip("/")).status_code == 200, link
    served = client.get("/openapi.json", base_url=where, headers=headers).get_json()
    assert served["servers"] == [{"url": base}]
    assert "evil" not in page and "javascript" not in page


@pytest.mark.parametrize(
    ("trust", "base"),
    [
        (None, "http://milk.internal:8080"),  # the default: a client's headers are not followed
        ("none", "http://milk.internal:8080"),
        ("proto", "https://milk.internal:8080"),  # the scheme only: what Cloud Run's front end sets
        ("all", "https://elsewhere.example/x"),
    ],
)
def test_forwarded_headers_are_followed_only_as_far_as_trusted(
    on_sample: tuple[Settings, dict[str, Any]],
    trust: str | None,
    base: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if trust is not None:
        monkeypatch.setenv("MILKPRICE_TRUST_FORWARDED", trust)
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "elsewhere.example",
        "X-Forwarded-Prefix": "/x",
    }
    client = Client()
    where = "http://milk.internal:8080/"
    page = client.get("/", base_url=where, headers=headers).get_data(as_text=True)
    assert f"curl -s {base}/forecast" in page
    served = client.get("/openapi.json", base_url=where, headers=headers).get_json()
    assert served["servers"] == [{"url": base}]
    if trust in (None, "none", "proto"):
        assert "elsewhere" not in page and "elsewhere" not in json.dumps(served)


def test_a_trust_that_is_no_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILKPRICE_TRUST_FORWARDED", "true")
    with pytest.raises(ConfigError, match="MILKPRICE_TRUST_FORWARDED='true' is not one of"):
        Settings.from_env()


# ---------------------------------------------------------------- the OpenAPI document


def test_openapi_describes_every_route(sample: Sample) -> None:
    client = Client()
    routes = predict_routes.ROUTES
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
    monkeypatch.setenv("MILKPRICE_MAX_ROWS", "3")
    seen = _without_a_model() | _with_what_is_missing(settings, trained_sample[0])
    cache.reset()
    os.environ["MILKPRICE_BUCKET"] = trained_sample[0].bucket  # a model with everything
    seen |= _with_everything(manifest(trained_sample[0]))
    assert documented <= seen, documented - seen


def _without_a_model() -> set[tuple[str | None, str, int]]:
    """What an empty bucket answers: no model yet."""
    tensor = {"inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}
    client = Client()
    for path in (
        "/",
        "/backtest.png",
        "/forecast",
        "/accuracy",  # no ledger yet: an empty one, no model needed
        "/metrics",
        "/v2/health/ready",
        "/v2/models/forecast",
        "/v2/models/forecast/ready",
        "/v2/models/forecast/versions/v1",
        "/v2/models/forecast/versions/v1/ready",
    ):
        client.get(path)
    client.post("/predict", json={"data": [{}]})
    client.post(INFER, json=tensor)
    client.post("/v2/models/forecast/versions/v1/infer", json=tensor)
    client.post("/v2/repository/index")
    return client.seen


def _with_what_is_missing(
    settings: Settings, trained: Settings
) -> set[tuple[str | None, str, int]]:
    """A ledger that does not match the contract, a model without a chart, one from before
    the forecast path: each answered as documented."""
    cache.reset()
    store.write(settings, contract.LEDGER, b'{"forecasts": 3}')
    client = Client()
    assert "does not match" in client.get("/accuracy").get_json()["error"]
    cache.reset()
    promote(
        settings, clone(trained, settings, "no-chart", edit=lambda d: d["backtest"].pop("chart"))
    )
    client.get("/backtest.png")
    cache.reset()
    promote(settings, clone(trained, settings, "no-path", edit=lambda d: d.pop("path")))
    client.get("/forecast?months=1")
    return client.seen


def _with_everything(doc: dict[str, Any]) -> set[tuple[str | None, str, int]]:
    """Every route of a served model with all it can have, asked right and wrong."""
    row = next_row(doc)
    features = doc["models"]["forecast"]["features"]
    good = {
        "inputs": [
            {
                "name": "X",
                "shape": [1, len(features)],
                "datatype": "FP64",
                "data": [row[f] for f in features],
            }
        ]
    }
    client = Client()
    versioned = f"/v2/models/forecast/versions/{doc['version']}"
    for path in (
        versioned,
        f"{versioned}/ready",
        "/v2/models/forecast/versions/nope",
        "/v2/models/forecast/versions/nope/ready",
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
        "/forecast?months=2",
        "/forecast?months=0",
    ):
        client.get(path)
    etag = client.get("/backtest.png").headers["ETag"]
    client.get("/backtest.png", headers={"If-None-Match": etag})
    _post_every_body(client, row, good, versioned)
    return client.seen


def _post_every_body(
    client: Client, row: dict[str, float], good: dict[str, Any], versioned: str
) -> None:
    """Each POST route given a good body, an empty, too many rows, the wrong type and a
    stalled one; then the V2 routes' own refusals, and a binary answer."""
    index = "/v2/repository/index"
    width = good["inputs"][0]["shape"][1]
    for path, ok in (
        ("/predict", {"data": [row]}),
        (INFER, good),
        (f"{versioned}/infer", good),
        (index, {"ready": True}),
    ):
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
    client.post("/v2/models/forecast/versions/nope/infer", json=good)
    client.post(index, json={"ready": "yes"})
    client.post(index, environ_overrides={"CONTENT_LENGTH": "100000000"})
    for action in ("load", "unload"):
        client.post(f"/v2/repository/models/forecast/{action}", json={})
        client.post(f"/v2/repository/models/nope/{action}", json={})
    binary = client.post(
        INFER,
        data=json.dumps({**good, "parameters": {"binary_data_output": True}}),
        content_type="application/octet-stream",
    )
    assert binary.headers["Inference-Header-Content-Length"], binary.data
