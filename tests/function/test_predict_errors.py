"""What a client gets wrong: a documented 4xx naming the row and field, never a 500."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.openapi_client import INFER, JSON, Client
from tests.support.rows import Sample

pytestmark = pytest.mark.usefixtures("fresh_process")

MAX_ROWS = 5
MAX_BYTES = 20_000
Case = tuple[str, str, dict[str, Any], int, dict[str, Any] | None]
P = "/predict"


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
