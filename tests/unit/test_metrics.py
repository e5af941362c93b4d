"""The functions' metrics as a scraper reads them: parsed back with the client's own parser,
counted exactly, named by Prometheus' conventions."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from milkprice import metrics
from milkprice.predict import metrics as predict_metrics
from milkprice.train import metrics as train_metrics


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, kind = metrics.exposition(None)
    assert kind.startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_a_request_is_counted_once_by_route_method_and_status() -> None:
    key = (
        "milkprice_predict_requests_total",
        (("method", "POST"), ("route", "/predict"), ("status", "200")),
    )
    bucket = (
        "milkprice_predict_request_duration_seconds_bucket",
        (("le", "0.0005"), ("route", "/predict")),
    )
    before = _samples()
    predict_metrics.observe("/predict", "POST", 200, 0.0004)
    predict_metrics.observe("/predict", "POST", 200, 0.002)
    predict_metrics.observe(None, "BREW", 404, 0.0001)
    after = _samples()
    assert after[key] - before.get(key, 0) == 2
    assert after[bucket] - before.get(bucket, 0) == 1  # 0.4 ms is in the 0.5 ms bucket, 2 ms not
    odd = (
        "milkprice_predict_requests_total",
        (("method", "other"), ("route", "unrouted"), ("status", "404")),
    )
    assert after[odd] - before.get(odd, 0) == 1


def test_names_follow_the_conventions() -> None:
    predict_metrics.get()
    train_metrics.get()
    body, _ = metrics.exposition(None)
    families = list(text_string_to_metric_families(body.decode()))
    ours = [f for f in families if f.name.startswith("milkprice_")]
    assert len(ours) >= 12, [f.name for f in ours]
    for family in ours:
        ends = {s.name.removeprefix(family.name) for s in family.samples}
        if family.type == "counter":  # the parser names a counter's family without _total
            assert ends <= {"_total"}, family.name  # none yet for labels never used
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if family.type == "info":
            assert ends == {"_info"}, family.name
        # times in seconds, never milliseconds, and always said in the name's unit
        assert "milli" not in family.name
        assert "second" not in family.name or family.name.endswith("_seconds"), family.name
    assert "process_resident_memory_bytes" in {f.name for f in families}


def test_a_promotion_sets_its_time_and_the_age_follows_it() -> None:
    train_metrics.promoted(1_000.0)
    got = _samples()
    assert got[("milkprice_train_last_promotion_timestamp_seconds", ())] == 1_000.0
    assert got[("milkprice_train_last_promotion_age_seconds", ())] > 1.7e9


def test_openmetrics_is_answered_when_asked() -> None:
    body, kind = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert kind.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_each_training_stage_is_one_observation_of_its_histogram() -> None:
    from milkprice.train.core import Timer

    key = ("milkprice_train_stage_duration_seconds_count", (("stage", "clean"),))
    before = _samples()
    timer = Timer()
    with timer("clean"):
        pass
    with timer("clean"):
        pass
    assert _samples()[key] - before.get(key, 0) == 2
    assert set(timer.seconds) == {"clean"}


def test_events_are_counted_by_the_platform_that_sent_them_and_the_answer() -> None:
    from milkprice.train import triggers

    upload = triggers.Upload("raw/precio_leche.csv", "7", "e1", "eventgrid")
    cases: list[tuple[triggers.Trigger | None, int, str]] = [
        (triggers.Uploads((upload,)), 200, "eventgrid"),
        (triggers.Schedule("knative-ping"), 200, "knative-ping"),
        (triggers.Validation(), 200, "handshake"),
        (triggers.Ignored("an other object"), 200, "ignored"),
        (None, 400, "unknown"),
    ]
    before = _samples()
    for found, status, _ in cases:
        train_metrics.event(found, status)
    after = _samples()
    for _, status, shape in cases:
        key = ("milkprice_train_events_total", (("shape", shape), ("status", str(status))))
        assert after[key] - before.get(key, 0) == 1, shape
