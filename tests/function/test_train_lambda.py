"""The train function's Lambda handler in-process, against the real bucket emulator: SQS
batches with partial batch failures, events invoked directly, and HTTP events.

As in ``test_train_events``, the training itself is left out where a test is about the
answer (``runner._train_and_write``), keeping the run's real read, claim and record.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from milkprice import contract, store
from milkprice.errors import BadRequest, ExportError, StorageUnavailable
from milkprice.settings import Settings
from milkprice.train import lambda_events, runner
from tests.support.buckets import runs, upload
from tests.support.paths import ROOT

PRICE = "raw/precio_leche.csv"


def _handler() -> Callable[[Any, Any], Any]:
    """``lambda_function.handler`` as Lambda imports it, from the function's folder."""
    path = ROOT / "functions" / "train" / "lambda_function.py"
    spec = importlib.util.spec_from_file_location("train_lambda_function", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler  # type: ignore[no-any-return]


handler = _handler()


def _failing(monkeypatch: pytest.MonkeyPatch, error: Exception | None) -> None:
    """Runs read, claim and record as usual; the training fails with ``error``, or is left
    out (None)."""

    def train(settings: Settings, rec: runner.Recorder, *args: object) -> None:
        if error is not None:
            raise error
        rec.finish("not_promoted", "training left out by the test")

    monkeypatch.setattr(runner, "_train_and_write", train)


# ---------------------------------------------------------------- events, as AWS sends them


def s3_notification(bucket: str, key: str, etag: str) -> dict[str, Any]:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T03:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": 1024, "eTag": etag, "sequencer": uuid.uuid4().hex},
        },
    }
    return {"Records": [record]}


def sqs(*bodies: Any) -> dict[str, Any]:
    """Each body as one SQS message of a batch, as the event source mapping hands them."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "handle",
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:milk-price-raw-created",
                "awsRegion": "us-east-1",
            }
            for body in bodies
        ]
    }


def ids(event: dict[str, Any]) -> list[str]:
    return [r["messageId"] for r in event["Records"]]


def url_event(method: str, path: str, body: str = "", token: str = "") -> dict[str, Any]:
    """A Function URL's request (payload format 2.0)."""
    headers = {"host": "train.lambda-url.us-east-1.on.aws", "content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "test",
            }
        },
        "body": body,
        "isBase64Encoded": False,
    }


# ---------------------------------------------------------------- SQS batches


@pytest.mark.parametrize(
    ("error", "retried"),
    [(StorageUnavailable("reading: storage unavailable"), True), (None, False)],
)
def test_a_batch_trains_once_and_reports_only_what_a_retry_can_help(
    settings: Settings,
    sample_raw: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception | None,
    retried: bool,
) -> None:
    _failing(monkeypatch, error)
    tokens = upload(settings, sample_raw)
    batch = sqs(
        s3_notification(settings.bucket, PRICE, tokens["precio_leche.csv"]),
        s3_notification(settings.bucket, "raw/banco_central.csv", tokens["banco_central.csv"]),
        s3_notification(settings.bucket, "raw/notes.txt", "abc"),  # not a raw file: ignored
        {"Event": "s3:TestEvent", "Bucket": settings.bucket},  # S3's test event: ignored
        "not json at all",  # no shape taken: logged, never retried
    )
    answer = handler(batch, None)
    failed = ids(batch)[:2] if retried else []
    assert answer == {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
    [record] = runs(settings)  # the two uploads of the batch: one run
    assert record["trigger"] == "upload" and record["event"]["names"] == [
        PRICE,
        "raw/banco_central.csv",
    ]
    assert record["outcome"] == ("failed" if retried else "not_promoted")


def test_a_failure_a_retry_cannot_help_is_not_reported(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing(monkeypatch, ExportError("the exported model disagrees with the fitted one"))
    tokens = upload(settings, sample_raw)
    batch = sqs(s3_notification(settings.bucket, PRICE, tokens["precio_leche.csv"]))
    assert handler(batch, None) == {"batchItemFailures": []}
    [record] = runs(settings)
    assert record["outcome"] == "failed" and record["error"]["retryable"] is False


def test_a_redelivered_batch_does_not_train_twice(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing(monkeypatch, None)
    tokens = upload(settings, sample_raw)
    batch = sqs(s3_notification(settings.bucket, PRICE, tokens["precio_leche.csv"]))
    assert handler(batch, None) == {"batchItemFailures": []}
    assert handler(batch, None) == {"batchItemFailures": []}
    assert [r["outcome"] for r in runs(settings)] == ["not_promoted"]  # the second: skipped


# ---------------------------------------------------------------- invoked directly


def test_events_invoked_directly(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing(monkeypatch, None)
    tokens = upload(settings, sample_raw)
    direct = handler(s3_notification(settings.bucket, PRICE, tokens["precio_leche.csv"]), None)
    assert direct["trigger"] == "upload" and direct["event"]["source"] == "s3"
    bridge = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {
            "bucket": {"name": settings.bucket},
            "object": {"key": PRICE, "etag": tokens["precio_leche.csv"]},
        },
    }
    skipped = handler(bridge, None)  # the same raw versions: claimed already
    assert skipped["outcome"] == "skipped" and skipped["event"]["source"] == "eventbridge"
    assert handler({"trigger": "schedule"}, None)["trigger"] == "schedule"
    assert handler({"trigger": "http"}, None)["trigger"] == "http"
    ignored = handler(s3_notification(settings.bucket, "raw/notes.txt", "x"), None)
    assert "not one of the raw files" in ignored["ignored"]
    with pytest.raises(BadRequest, match="EventBridge"):
        handler({"hello": "world"}, None)
    assert sorted(r["trigger"] for r in runs(settings)) == ["http", "schedule", "upload"]


def test_a_direct_invocation_that_a_retry_can_help_raises(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised, Lambda retries an asynchronous invocation (S3, EventBridge, the Scheduler)."""
    _failing(monkeypatch, StorageUnavailable("writing x: storage unavailable"))
    upload(settings, sample_raw)
    with pytest.raises(lambda_events.RunFailed, match="a retry may help"):
        handler({"trigger": "schedule"}, None)
    _failing(monkeypatch, ExportError("differs"))
    record = handler({"trigger": "schedule"}, None)  # would fail again: answered, not raised
    assert record["outcome"] == "failed" and record["error"]["retryable"] is False


# ---------------------------------------------------------------- HTTP


def test_http_events_reach_the_image_s_target(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing(monkeypatch, None)
    upload(settings, sample_raw)
    monkeypatch.setenv("MILKPRICE_TRAIN_TOKEN", "secret")
    health = handler(url_event("GET", "/"), None)
    assert health["statusCode"] == 200
    assert json.loads(health["body"])["bucket"] == settings.bucket
    refused = handler(url_event("POST", "/", '{"trigger": "http"}'), None)
    assert refused["statusCode"] == 401 and runs(settings) == []
    started = handler(url_event("POST", "/", '{"trigger": "http"}', token="secret"), None)
    assert started["statusCode"] == 200
    assert json.loads(started["body"])["outcome"] == "not_promoted"
    assert contract.read_pointer(settings) is None
    assert store.list_names(settings, store.RAW_PREFIX)
