"""Each cloud's upload event, as the local bridge sends it, reads back as the same upload in
the train function's parser: the two sides of the event endpoint agree on every cloud."""

from __future__ import annotations

import json

import pytest

from milkprice import store
from milkprice.bridge import shapes as event_shapes
from milkprice.settings import CLOUDS, LocalSettings
from milkprice.train import triggers

TOKENS = {"gcp": "1764680000123456", "aws": "9dd4e461268c8034f5c8564e155c67a6", "azure": "0x8D4BC"}


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_cloud_s_event_names_the_object_and_its_version(cloud: str) -> None:
    settings = LocalSettings(bucket="milk-price", cloud=cloud)
    name = store.RAW_PREFIX + "precio_leche.csv"
    meta = store.Meta(
        name, 1234, TOKENS[cloud], "text/csv", "2026-12-01T00:00:00Z", "2026-12-01T00:00:01Z"
    )
    headers, body = event_shapes.SHAPES[cloud](settings, name, meta)
    found = triggers.parse("POST", headers, body)
    assert isinstance(found, triggers.Uploads)
    [upload] = found.items
    assert (upload.name, upload.token, upload.bucket) == (name, TOKENS[cloud], "milk-price")


def test_s3_keys_travel_url_encoded_as_s3_sends_them() -> None:
    settings = LocalSettings(bucket="milk-price", cloud="aws")
    meta = store.Meta("raw/a b.csv", 1, "e", "text/csv", "", "")
    _, body = event_shapes.s3_notification(settings, "raw/a b.csv", meta)
    assert json.loads(body)["Records"][0]["s3"]["object"]["key"] == "raw/a+b.csv"
    assert triggers.parse("POST", {}, body) == triggers.Ignored(
        "raw/a b.csv is not one of the raw files: " + ", ".join(triggers.RAW_NAMES)
    )


def test_a_queue_batch_carries_each_notification_as_lambda_hands_it_over() -> None:
    settings = LocalSettings(bucket="milk-price", cloud="aws")
    name = store.RAW_PREFIX + "banco_central.csv"
    meta = store.Meta(name, 9, "abc", "text/csv", "", "")
    _, body = event_shapes.s3_notification(settings, name, meta)
    message = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": body.decode()}
    batch = event_shapes.sqs_event([message], "arn:aws:sqs:us-east-1:1:q", "us-east-1")
    found = triggers.parse("POST", {}, json.dumps(batch).encode())
    assert isinstance(found, triggers.Uploads) and found.items[0].token == "abc"
