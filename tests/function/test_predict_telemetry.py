"""The predict function's telemetry as an operator reads it: GET /metrics parsed with the
client's own parser, counts checked exactly around known requests, and a request's trace
continued through its spans to a real OTLP receiver."""

from __future__ import annotations

from typing import Any

import pytest

from milkprice.settings import Settings
from tests.support.openapi_client import Client
from tests.support.rows import Sample
from tests.support.telemetry import exporting, key, parse

pytestmark = pytest.mark.usefixtures("fresh_process")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def scrape(client: Client) -> dict[Any, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def test_requests_rows_and_the_model_are_counted_exactly(
    on_sample: tuple[Settings, dict[str, Any]], sample: Sample
) -> None:
    _, doc = on_sample
    client = Client()
    before = scrape(client)  # a scrape loads no model: the next request does
    client.get("/forecast")
    for rows in ([sample.row], [sample.row] * 3):
        assert client.post("/predict", json={"data": rows}).status_code == 200
    assert client.post("/predict", json={"data": []}).status_code == 400
    assert client.get("/no/such/route").status_code == 404
    assert client.get("/predict").status_code == 405
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return after.get(key(name, **labels), 0) - before.get(key(name, **labels), 0)

    requests = "milkprice_predict_requests_total"
    assert delta(requests, route="/predict", method="POST", status="200") == 2
    assert delta(requests, route="/predict", method="POST", status="400") == 1
    assert delta(requests, route="unrouted", method="GET", status="404") == 1
    assert delta(requests, route="/predict", method="GET", status="405") == 1
    assert delta(requests, route="/metrics", method="GET", status="200") == 0  # not counted
    count = "milkprice_predict_request_duration_seconds_count"
    assert delta(count, route="/predict") == 4
    assert delta("milkprice_predict_rows_scored_total", model="forecast") == 4
    info = key("milkprice_predict_model_info", version=doc["version"], models="forecast,legacy")
    assert after[info] == 1
    assert delta("milkprice_predict_reloads_total", outcome="loaded") == 1
    assert delta("milkprice_predict_pointer_checks_total", outcome="moved") == 1


def test_a_request_s_trace_goes_on_through_its_spans(
    on_sample: tuple[Settings, dict[str, Any]], sample: Sample
) -> None:
    with exporting() as received:
        client = Client()
        headers = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
        response = client.post("/predict", json={"data": [sample.row]}, headers=headers)
        assert response.status_code == 200
        spans = received.of_trace(TRACE, at_least=4)
    by_name = {s.name: s for s in spans}
    root = by_name["POST /predict"]
    assert root.parent_id == SPAN and root.service == "milkprice-predict"
    for name in ("read body", "validate", "score"):
        assert by_name[name].parent_id == root.span_id, name
