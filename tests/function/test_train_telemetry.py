"""The train function's telemetry: a run carries the trace of the request that started it (in
its record, every log line and the spans a real OTLP receiver gets), every target answers
GET /metrics, and runs, stages and events are counted exactly."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest

from milkprice import contract, logs
from milkprice.settings import Settings
from tests.support.buckets import upload
from tests.support.paths import TRAIN_MAIN
from tests.support.telemetry import exporting, key, parse

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
STAGES = ("read", "clean", "backtest", "export_forecast", "write", "promote")


def client(target: str, kind: str = "http") -> Any:
    return functions_framework.create_app(target, str(TRAIN_MAIN), kind).test_client()


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """The train function's log lines, formatted as it writes them."""
    found: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(self.format(record))

    handler = Keep(logging.INFO)
    handler.setFormatter(logs.JsonFormatter("train"))
    logger = logging.getLogger("milkprice")
    logger.addHandler(handler)
    yield found
    logger.removeHandler(handler)


def scrape(app: Any) -> dict[Any, float]:
    response = app.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def test_a_run_goes_on_in_its_caller_s_trace(
    settings: Settings, sample_raw: dict[str, bytes], lines: list[str]
) -> None:
    upload(settings, sample_raw)
    with exporting() as received:
        response = client("train_http").post("/", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"})
        record = response.get_json()
        assert record["outcome"] == "promoted", record
        spans = received.of_trace(TRACE, at_least=len(STAGES) + 1)
    assert record["trace_id"] == TRACE
    stored = contract.read_run(settings, record["run_id"])
    assert stored is not None and stored.trace_id == TRACE
    read = [json.loads(line) for line in lines]
    first = next(i for i, line in enumerate(read) if line["message"].startswith("run "))
    run_lines = read[first:]  # the run's: before it, the process's own (an open function)
    assert len(run_lines) >= 2  # started and finished, at least
    assert all(line["trace_id"] == TRACE for line in run_lines)
    assert all(line[logs.TRACE_KEY].endswith(f"/traces/{TRACE}") for line in run_lines)
    by_name = {s.name: s for s in spans}
    root = by_name["train http"]
    assert root.parent_id == SPAN and root.service == "milkprice-train"
    for stage in STAGES:
        assert by_name[stage].parent_id == root.span_id, stage


def test_every_target_answers_its_metrics_and_counts_runs_stages_and_events(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    upload(settings, sample_raw)
    http, service = client("train_http"), client("train_service")
    events, storage = client("train_events"), client("train_event", "cloudevent")
    before = scrape(http)
    assert http.post("/").get_json()["outcome"] == "promoted"
    handshake = [
        {
            "id": "1",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {"validationCode": "abc"},
        }
    ]
    assert events.post("/events", json=handshake).status_code == 200
    assert events.post("/events", data=b"not json").status_code == 400
    for app in (service, events, storage):  # the same process: the same counts
        after = scrape(app)

        def delta(name: str, after: dict[Any, float] = after, **labels: str) -> float:
            return after.get(key(name, **labels), 0) - before.get(key(name, **labels), 0)

        assert delta("milkprice_train_runs_total", trigger="http", outcome="promoted") == 1
        for stage in STAGES:
            assert delta("milkprice_train_stage_duration_seconds_count", stage=stage) == 1
        assert delta("milkprice_train_events_total", shape="handshake", status="200") == 1
        assert delta("milkprice_train_events_total", shape="unknown", status="400") == 1
        assert after[key("milkprice_train_last_promotion_age_seconds")] >= 0
    refused = storage.get("/other")
    assert refused.status_code == 405 and refused.get_json()["error"]


def test_with_metrics_off_nothing_is_answered_at_metrics(settings: Settings) -> None:
    import os

    from milkprice import settings as settings_module

    os.environ["MILKPRICE_METRICS"] = "off"
    settings_module.forget()
    try:
        for app in (client("train_http"), client("train_event", "cloudevent")):
            assert app.get("/metrics").status_code == 404
    finally:
        settings_module.forget()
