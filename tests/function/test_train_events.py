"""The train function's event endpoint (``train_events``): every platform's event shape, sent
as that platform sends it, against the real bucket emulator.

Two real trainings show an event runs the whole pipeline, and that a redelivery during a live
run is answered so that it comes again; the tests of each shape leave the training itself out
(``runner._train_and_write``), keeping the run's real read, claim, archive and run record, so
that the suite stays quick.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import functions_framework
import pytest

from milkprice import contract, store
from milkprice.errors import BadRequest, ExportError, MethodNotAllowed, StorageUnavailable
from milkprice.settings import Settings
from milkprice.train import runner, triggers
from tests.support.platform_events import (
    CLOUDEVENT,
    CLOUDEVENTS,
    PING_ATTRIBUTES,
    PRICE,
    SCHEDULE,
    SOURCE,
    STORAGE,
    UPLOAD_SHAPES,
    binary,
    blob_cloudevent,
    blob_event_grid,
    client,
    eventbridge,
    finalized,
    post,
    runs,
    s3_notification,
    s3_record,
    send_upload,
    upload,
)

# ---------------------------------------------------------------- through the function


def test_an_s3_notification_trains_once_and_every_redelivery_is_skipped(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    """Several records in one event train once; the same upload in any shape is skipped."""
    tokens = upload(settings, sample_raw)
    c = client()
    etags = {n: hashlib.md5(t.encode()).hexdigest() for n, t in tokens.items()}
    records = [s3_record(settings.bucket, f"raw/{n}", etags[n]) for n in sorted(sample_raw)]
    other = s3_record(settings.bucket, "archive/raw/old.csv", "d41d8cd98f00b204e9800998ecf8427e")
    answer = post(c, s3_notification(*records, other), path="/events")
    assert answer.status_code == 200, answer.get_json()
    first = answer.get_json()
    assert first["outcome"] == "promoted" and first["trigger"] == "upload"
    assert first["event"]["source"] == "s3"
    assert sorted(first["event"]["names"]) == sorted(f"raw/{n}" for n in sample_raw)
    assert [(r["run_id"], r["trigger"]) for r in runs(settings)] == [(first["run_id"], "upload")]
    # the same upload again, in every shape a platform may send it: skipped, no new run
    for shape in UPLOAD_SHAPES:
        again = send_upload(shape, c, settings, PRICE, tokens["precio_leche.csv"])
        assert again.status_code == 200, (shape, again.get_json())
        record = again.get_json()
        assert record["outcome"] == "skipped" and record["trigger"] == "upload", shape
        assert record["earlier"]["run_id"] == first["run_id"], shape
        assert record["event"]["source"] == UPLOAD_SHAPES[shape], shape
    assert len(runs(settings)) == 1


@pytest.mark.parametrize("shape", list(UPLOAD_SHAPES))
@pytest.mark.usefixtures("no_training")
def test_each_upload_shape_starts_one_upload_run(
    settings: Settings, sample_raw: dict[str, bytes], shape: str
) -> None:
    tokens = upload(settings, sample_raw)
    c = client()
    answer = send_upload(shape, c, settings, PRICE, tokens["precio_leche.csv"])
    assert answer.status_code == 200, answer.get_json()
    record = answer.get_json()
    assert record["trigger"] == "upload" and record["outcome"] == "not_promoted", record
    assert record["event"]["source"] == UPLOAD_SHAPES[shape]
    assert record["event"]["name"] == PRICE
    assert record["inputs"][PRICE]["token"] == tokens["precio_leche.csv"]
    [written] = runs(settings)
    assert written["run_id"] == record["run_id"] and written["trigger"] == "upload"
    # a redelivery: skipped; a new version of the file: a new run
    again = send_upload(shape, c, settings, PRICE, tokens["precio_leche.csv"])
    assert again.status_code == 200 and again.get_json()["outcome"] == "skipped"
    assert len(runs(settings)) == 1
    new = store.write(settings, PRICE, sample_raw["precio_leche.csv"], "text/csv")
    assert send_upload(shape, c, settings, PRICE, new).get_json()["outcome"] == "not_promoted"
    assert [r["trigger"] for r in runs(settings)] == ["upload", "upload"]


@pytest.mark.usefixtures("no_training")
def test_schedules_start_a_scheduled_run_every_time(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    upload(settings, sample_raw)
    c = client()
    ping_id = str(uuid.uuid4())
    structured = {**PING_ATTRIBUTES, "id": "2", "datacontenttype": "application/json"}
    sent = [
        post(c, SCHEDULE, path="/events"),  # EventBridge Scheduler's fixed payload
        c.post("/", data=json.dumps(SCHEDULE), headers=binary({**PING_ATTRIBUTES, "id": ping_id})),
        post(c, {**structured, "data": SCHEDULE}, CLOUDEVENT),
        post(c, SCHEDULE),  # the same again: a schedule is not claimed, it runs again
    ]
    for answer in sent:
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["trigger"] == "schedule"
        assert answer.get_json()["outcome"] == "not_promoted"
    written = runs(settings)
    assert [r["trigger"] for r in written] == ["schedule"] * 4
    assert sorted(r["event"]["source"] for r in written) == [
        "knative-ping",
        "knative-ping",
        "scheduler",
        "scheduler",
    ]
    assert {"source": "knative-ping", "id": ping_id} in [r["event"] for r in written]


def test_the_two_event_grid_handshakes_are_answered_and_train_nothing(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    upload(settings, sample_raw)
    c = client()
    # CloudEvents schema: an OPTIONS request, answered with the allowed origin
    origin = "eventgrid.azure.net"
    answer = c.options(
        "/",
        headers={
            "WebHook-Request-Origin": origin,
            "WebHook-Request-Callback": "https://rp-eastus2.eventgrid.azure.net:553/validate",
            "WebHook-Request-Rate": "120",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["WebHook-Allowed-Origin"] == origin
    assert answer.headers["WebHook-Allowed-Rate"] == "*"
    # Event Grid schema: the validation code echoed back
    validation = {
        "id": str(uuid.uuid4()),
        "topic": STORAGE,
        "subject": "",
        "data": {
            "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
            "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x",
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-11-27T03:00:00.4556811Z",
        "metadataVersion": "1",
        "dataVersion": "1",
    }
    answer = c.post(
        "/",
        data=json.dumps([validation]),
        headers={"Content-Type": "application/json", "aeg-event-type": "SubscriptionValidation"},
    )
    assert answer.status_code == 200
    assert answer.get_json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert c.options("/").status_code == 405  # OPTIONS is only the handshake
    assert runs(settings) == []
    assert store.list_names(settings, store.CLAIMS_PREFIX) == []


def test_test_events_other_objects_and_unknown_shapes_start_nothing(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    upload(settings, sample_raw)
    c = client()
    bucket, etag = settings.bucket, "d41d8cd98f00b204e9800998ecf8427e"
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-27T03:00:00.000Z",
        "Bucket": bucket,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    ignored = [
        post(c, test_event, path="/events"),
        post(c, s3_notification(s3_record(bucket, "models/current.json", etag)), path="/events"),
        post(c, s3_notification(s3_record(bucket, "raw/notes.txt", etag))),
        post(c, s3_notification(s3_record(bucket, PRICE, etag, "ObjectRemoved:Delete"))),
        post(c, eventbridge(bucket, "precio_leche.csv", etag)),  # not under raw/
        post(c, eventbridge(bucket, PRICE, etag, "Object Deleted")),
        post(c, blob_cloudevent(bucket, "raw/precio_leche.csv.tmp", "0x1"), CLOUDEVENT),
    ]
    for answer in ignored:
        assert answer.status_code == 200, answer.get_json()
        assert "ignored" in answer.get_json()
    unknown = [
        post(c, {"hello": "world"}),
        c.post("/", data=b"not json", headers={"Content-Type": "text/plain"}),
        c.post("/events", data=b""),
        post(c, {"trigger": "http"}),  # a manual run goes to the HTTP trigger
        post(c, {**PING_ATTRIBUTES, "id": "1", "type": "com.example.other"}, CLOUDEVENT),
        post(c, {"Records": [{"eventSource": "aws:dynamodb", "dynamodb": {}}]}),
        post(c, eventbridge(bucket, PRICE, etag) | {"source": "aws.ec2"}),
    ]
    for answer in unknown:
        assert answer.status_code == 400, answer.get_json()
        message = answer.get_json()["error"]
        for shape in ("CloudEvent", "S3 event notification", "EventBridge", "Event Grid"):
            assert shape in message, (shape, message)
        assert '{"trigger": "schedule"}' in message
    assert c.get("/").status_code == 405
    assert runs(settings) == []
    assert store.list_names(settings, store.CLAIMS_PREFIX) == []


@pytest.mark.parametrize(
    ("error", "status"),
    [(StorageUnavailable("writing x: storage unavailable"), 500), (ExportError("differs"), 200)],
)
def test_only_a_failure_a_retry_can_help_asks_for_a_redelivery(
    settings: Settings,
    sample_raw: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
) -> None:
    def failing(*args: object) -> None:
        raise error

    monkeypatch.setattr(runner, "_train_and_write", failing)
    tokens = upload(settings, sample_raw)
    answer = send_upload("s3", client(), settings, PRICE, tokens["precio_leche.csv"])
    assert answer.status_code == status
    [record] = runs(settings)
    assert record["outcome"] == "failed" and record["run_id"] == answer.get_json()["run_id"]
    assert record["error"]["retryable"] is (status == 500)


def test_a_bug_is_acknowledged_and_its_record_keeps_the_error(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error fails the same way on every redelivery: the event is answered 200
    (not retrained forever), the record says 500, and a redelivery is skipped."""

    def bug(*args: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(runner, "_write_artifacts", bug)
    tokens = upload(settings, sample_raw)
    answer = send_upload("s3", client(), settings, PRICE, tokens["precio_leche.csv"])
    assert answer.status_code == 200, answer.get_json()
    [record] = runs(settings)
    assert record["outcome"] == "failed" and record["run_id"] == answer.get_json()["run_id"]
    assert record["error"]["status"] == 500 and record["error"]["retryable"] is False
    assert "ZeroDivisionError: division by zero" in record["error"]["error"]
    again = send_upload("eventbridge", client(), settings, PRICE, tokens["precio_leche.csv"])
    assert again.status_code == 200 and again.get_json()["outcome"] == "skipped"
    assert again.get_json()["earlier"]["run_id"] == record["run_id"]
    assert len(runs(settings)) == 1


def test_a_redelivery_while_its_run_is_alive_is_answered_503_not_skipped(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    """The run holding the raw versions may still die: a 200 would drop the event, so the
    platform is told to come again; once that run has finished, a redelivery is skipped."""
    tokens = upload(settings, sample_raw)
    token = tokens["precio_leche.csv"]
    first: list[Any] = []
    thread = threading.Thread(
        target=lambda: first.append(send_upload("s3", client(), settings, PRICE, token))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not contract.run_ids(settings) and time.monotonic() < deadline:  # once claimed
            time.sleep(0.05)
        [live] = contract.list_runs(settings)
        assert live.outcome == "running", live
        again = send_upload("eventarc-binary", client(), settings, PRICE, token)
    finally:
        thread.join(timeout=600)
    assert again.status_code == 503, again.get_json()
    assert 1 <= int(again.headers["Retry-After"]) <= settings.claim_timeout
    held = again.get_json()
    assert held["outcome"] == "skipped" and held["earlier"]["run_id"] == live.run_id
    assert held["error"]["retryable"] is True and held["error"]["status"] == 503
    [done] = first
    assert done.status_code == 200 and done.get_json()["outcome"] == "promoted"
    later = send_upload("eventarc-binary", client(), settings, PRICE, token)
    assert later.status_code == 200 and later.get_json()["outcome"] == "skipped"
    assert contract.run_ids(settings) == [live.run_id]


# ---------------------------------------------------------------- the parsing alone


def parse(doc: Any, headers: dict[str, str] | None = None, method: str = "POST") -> Any:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return triggers.parse(method, headers or {"Content-Type": "application/json"}, body)


def test_s3_keys_are_url_decoded() -> None:
    record = s3_record("b", PRICE, '"abc"')
    record["s3"]["object"]["key"] = "raw%2Fprecio_leche.csv"
    found = parse(s3_notification(record))
    assert found == triggers.Uploads(
        (triggers.Upload(PRICE, "abc", record["s3"]["object"]["sequencer"], "s3", "b"),)
    )
    spaced = s3_record("b", "raw/precio leche+2026 (1).csv", "abc")
    assert spaced["s3"]["object"]["key"] == "raw/precio+leche%2B2026+%281%29.csv"
    ignored = parse(s3_notification(spaced))
    assert isinstance(ignored, triggers.Ignored)
    assert "raw/precio leche+2026 (1).csv is not one of the raw files" in ignored.reason


def test_a_batch_is_one_answer() -> None:
    names = [f"raw/{n}" for n in store.RAW_FILES]
    found = parse(s3_notification(*(s3_record("b", n, "e") for n in [*names, "raw/x.csv"])))
    assert isinstance(found, triggers.Uploads) and [u.name for u in found.items] == names
    assert found.event()["names"] == names
    batch = [blob_cloudevent("c", n, "0x8D4BCC2E4835CD0") for n in names]
    found = parse(batch, {"Content-Type": CLOUDEVENTS})
    assert isinstance(found, triggers.Uploads) and len(found.items) == 3
    assert {(u.bucket, u.token, u.source) for u in found.items} == {
        ("c", "0x8D4BCC2E4835CD0", "eventgrid")
    }
    only_others = parse(s3_notification(s3_record("b", "a.csv", "e"), s3_record("b", "b", "e")))
    assert isinstance(only_others, triggers.Ignored) and "a.csv" in only_others.reason


def test_cloudevents_in_both_modes_and_in_base64() -> None:
    attributes, data = finalized("b", PRICE, "1700000000000001")
    expected = triggers.Upload(PRICE, "1700000000000001", attributes["id"], "eventarc", "b")
    assert parse(data, binary(attributes)) == triggers.Uploads((expected,))
    assert parse({**attributes, "data": data}, {"Content-Type": CLOUDEVENT}).items == (expected,)
    encoded = base64.b64encode(json.dumps(data).encode()).decode()
    assert parse({**attributes, "data_base64": encoded}).items == (expected,)
    assert expected.event()["generation"] == "1700000000000001"  # as train_event recorded it
    deleted = {**attributes, "type": "google.cloud.storage.object.v1.deleted"}
    assert isinstance(parse(data, binary(deleted)), triggers.Ignored)
    ping = parse(b"", binary({**PING_ATTRIBUTES, "id": "7"}))  # a ping without data
    assert ping == triggers.Schedule("knative-ping", "7")


def test_event_grid_details() -> None:
    nested = blob_cloudevent("milk", "raw/precio_leche.csv", "0x1")
    assert parse(nested).items[0].bucket == "milk"
    # Data Lake: an empty file is created first, its content flushed later
    created = blob_event_grid("milk", PRICE, "0x1")
    created["data"]["api"] = "CreateFile"
    assert isinstance(parse([created]), triggers.Ignored)
    created["data"]["api"] = "FlushWithClose"
    assert isinstance(parse([created]), triggers.Uploads)
    created["subject"] = "/containers/milk/raw/precio_leche.csv"
    with pytest.raises(BadRequest, match="subject must be"):
        parse([created])
    with pytest.raises(BadRequest, match="validationCode"):
        parse([{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}])
    answer = parse(b"", {"WebHook-Request-Origin": ""}, "OPTIONS")
    assert answer == triggers.Validation(
        headers={"WebHook-Allowed-Origin": "*", "WebHook-Allowed-Rate": "*"}
    )
    with pytest.raises(MethodNotAllowed):
        parse(b"", {}, "PUT")


@pytest.mark.parametrize(
    "body",
    [b"[]", b"null", b'"text"', b"{}", b'{"Records": []}', b'{"Records": ["x"]}', b"\xff"],
)
def test_no_known_shape_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest, match="expected one of"):
        parse(body)


def test_the_parser_imports_nothing_heavy() -> None:
    code = (
        "import sys, milkprice.train.triggers; "
        "print([m for m in sys.modules if m.startswith(('pandas', 'sklearn'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cloudevent_function_still_takes_eventarc_uploads_alone(settings: Settings) -> None:
    """``train_event`` uses the same parser and does what it did: a finalized raw object
    starts a run (here one that fails: the bucket has no raw files), anything else nothing."""
    c = functions_framework.create_app("train_event", SOURCE, "cloudevent").test_client()
    ping = binary({**PING_ATTRIBUTES, "id": "1"})
    assert c.post("/", data=json.dumps(SCHEDULE), headers=ping).status_code == 200
    attributes, data = finalized(settings.bucket, "raw/notes.txt", "4")
    assert c.post("/", data=json.dumps(data), headers=binary(attributes)).status_code == 200
    assert runs(settings) == []
    attributes, data = finalized(settings.bucket, PRICE, "5")
    assert c.post("/", data=json.dumps(data), headers=binary(attributes)).status_code == 200
    [record] = runs(settings)
    assert record["trigger"] == "upload" and record["outcome"] == "failed"
    assert record["event"] == {
        "id": attributes["id"],
        "source": "eventarc",
        "name": PRICE,
        "token": "5",
        "generation": "5",
    }


# ---------------------------------------------------------------- who may start a run

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
TARGETS = {  # every target that can start a run, with its signature type
    "train_http": "http",
    "train_events": "http",
    "train_service": "http",
    "train_event": "cloudevent",
}


def app(target: str) -> Any:
    return functions_framework.create_app(target, SOURCE, TARGETS[target]).test_client()


def start_run(target: str, c: Any, settings: Settings, token: str, headers: dict[str, str]) -> Any:
    """What the target takes to start a run: an upload of precio_leche.csv as Eventarc sends
    it to the storage trigger, the scheduler's payload to every other target."""
    if target == "train_event":
        attributes, data = finalized(settings.bucket, PRICE, token)
        return c.post("/", data=json.dumps(data), headers={**binary(attributes), **headers})
    path = "/events" if target == "train_service" else "/"
    return c.post(path, data=json.dumps(SCHEDULE), headers={**JSON, **headers})


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.usefixtures("no_training")
def test_with_a_token_every_target_that_can_start_a_run_asks_for_it(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.setenv("MILKPRICE_TRAIN_TOKEN", TOKEN)
    tokens = upload(settings, sample_raw)
    c = app(target)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        refused = start_run(target, c, settings, tokens["precio_leche.csv"], headers)
        assert refused.status_code == 401, (headers, refused.get_data())
        assert "Authorization: Bearer" in refused.get_json()["error"]
    assert runs(settings) == []
    assert store.list_names(settings, store.CLAIMS_PREFIX) == []
    started = start_run(target, c, settings, tokens["precio_leche.csv"], BEARER)
    assert started.status_code == 200, started.get_data()
    assert len(runs(settings)) == 1


def test_with_a_token_only_the_handshakes_go_without_it(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handshake starts nothing; anything else on the events endpoint could, or probes what
    it takes: without the token, a 401 (an ignored event and an unknown shape included)."""
    monkeypatch.setenv("MILKPRICE_TRAIN_TOKEN", TOKEN)
    upload(settings, sample_raw)
    c = client()
    origin = c.options("/", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert origin.status_code == 200
    assert origin.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    code = str(uuid.uuid4())
    validation = {
        "id": "1",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "data": {"validationCode": code},
    }
    echoed = post(c, [validation])
    assert echoed.status_code == 200 and echoed.get_json() == {"validationResponse": code}
    bucket, etag = settings.bucket, "d41d8cd98f00b204e9800998ecf8427e"
    for doc in (
        s3_notification(s3_record(bucket, "raw/notes.txt", etag)),  # ignored with the token
        {"Event": "s3:TestEvent", "Bucket": bucket},
        {"hello": "world"},  # no known shape
    ):
        answer = post(c, doc)
        assert answer.status_code == 401, (doc, answer.get_json())
        assert c.post("/", data=json.dumps(doc), headers={**JSON, **BEARER}).status_code in (
            200,
            400,
        )
    assert runs(settings) == []


OTHER_BUCKET = "someone-elses-bucket"


@pytest.mark.parametrize("shape", list(UPLOAD_SHAPES))
@pytest.mark.usefixtures("no_training")
def test_an_upload_to_another_bucket_starts_nothing(
    settings: Settings, sample_raw: dict[str, bytes], shape: str
) -> None:
    tokens = upload(settings, sample_raw)
    answer = send_upload(shape, client(), settings, PRICE, tokens["precio_leche.csv"], OTHER_BUCKET)
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert OTHER_BUCKET in error and repr(settings.bucket) in error, error
    assert runs(settings) == []
    assert store.list_names(settings, store.CLAIMS_PREFIX) == []


@pytest.mark.usefixtures("no_training")
def test_the_storage_trigger_refuses_another_bucket_and_takes_an_event_naming_none(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    tokens = upload(settings, sample_raw)
    c = app("train_event")
    attributes, data = finalized(OTHER_BUCKET, PRICE, tokens["precio_leche.csv"])
    answer = c.post("/", data=json.dumps(data), headers=binary(attributes))
    assert answer.status_code == 400 and settings.bucket in answer.get_json()["error"]
    assert runs(settings) == []
    del data["bucket"]  # where a shape names no bucket, the event is not refused for that
    assert c.post("/", data=json.dumps(data), headers=binary(attributes)).status_code == 200
    assert [r["trigger"] for r in runs(settings)] == ["upload"]


def test_an_event_naming_no_bucket_is_taken() -> None:
    detail = eventbridge("b", PRICE, "e")
    del detail["detail"]["bucket"]
    found = parse(detail)
    assert isinstance(found, triggers.Uploads) and found.items[0].bucket == ""
    assert parse(blob_cloudevent("milk", PRICE, "0x1")).items[0].bucket == "milk"
    assert parse(s3_notification(s3_record("b3", PRICE, "e"))).items[0].bucket == "b3"


DEEP = 100_000


def _deep_bodies() -> dict[str, tuple[bytes, dict[str, str]]]:
    """Bodies nested past the JSON decoder's limit, or just under it (decoded, then walked)."""
    under = b"[" * 900 + b"]" * 900
    encoded = base64.b64encode(b"[" * DEEP).decode()
    ce = {**PING_ATTRIBUTES, "id": "1", "data_base64": encoded}
    sqs_body = {"Records": [{"eventSource": "aws:sqs", "body": "[" * DEEP}]}
    return {
        "arrays": (b"[" * DEEP, JSON),
        "objects": (b'{"a":' * DEEP, JSON),
        "arrays-under-the-limit": (under, JSON),
        "binary-cloudevent": (b"[" * DEEP, binary({**PING_ATTRIBUTES, "id": "1"})),
        "structured-cloudevent": (b"[" * DEEP, {"Content-Type": CLOUDEVENT}),
        "data_base64": (json.dumps(ce).encode(), {"Content-Type": CLOUDEVENT}),
        "sqs-body": (json.dumps(sqs_body).encode(), JSON),
    }


def _http_trigger(target: str, path: str) -> bool:
    return target == "train_http" or (target == "train_service" and path == "/")


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_deeply_nested_body_is_a_json_400(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """Not an HTML 500, which platforms redeliver forever; with and without a token."""
    c = app(target)
    for token in ("", TOKEN):
        monkeypatch.setenv("MILKPRICE_TRAIN_TOKEN", token)
        for name, (body, headers) in _deep_bodies().items():
            for path in ("/events", "/"):
                if _http_trigger(target, path) and name in ("data_base64", "sqs-body"):
                    continue  # nested only inside a string, which the HTTP trigger never reads
                if target == "train_event" and name in ("arrays-under-the-limit", "sqs-body"):
                    continue  # decoded, and no CloudEvent: the Functions Framework answers
                answer = c.post(path, data=body, headers={**headers, **BEARER})
                assert answer.status_code == 400, (name, path, answer.get_data()[:300])
                assert answer.is_json and answer.get_json()["error"], (name, path)
    assert runs(settings) == []


def test_the_http_trigger_refuses_a_body_that_is_not_a_json_object(settings: Settings) -> None:
    c = app("train_http")
    for body in (b'{"trigger": "schedule"', b"[]", b'"schedule"', b"\xff"):
        answer = c.post("/", data=body, headers=JSON)
        assert answer.status_code == 400, (body, answer.get_data())
        assert answer.get_json()["error"]
    assert runs(settings) == []
