"""Every platform's upload and schedule events as the platform sends them (only names, tokens
and ids are ours), and the helpers the train function's event tests share."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any
from urllib.parse import quote_plus

import functions_framework

from milkprice import contract, store
from milkprice.settings import Settings
from milkprice.train import runner
from tests.support.paths import TRAIN_MAIN

SOURCE = str(TRAIN_MAIN)
PRICE = "raw/precio_leche.csv"
CLOUDEVENT = "application/cloudevents+json; charset=utf-8"
CLOUDEVENTS = "application/cloudevents-batch+json; charset=utf-8"
ACCOUNT = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/milk"
STORAGE = f"{ACCOUNT}/providers/Microsoft.Storage/storageAccounts/milkprice"


def upload(settings: Settings, files: dict[str, bytes]) -> dict[str, str]:
    return {
        name: store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")
        for name, payload in files.items()
    }


def client() -> Any:
    return functions_framework.create_app("train_events", SOURCE, "http").test_client()


def runs(settings: Settings) -> list[dict[str, Any]]:
    return [contract.to_builtins(r) for r in contract.list_runs(settings)]


# ---------------------------------------------------------------- the platforms' payloads
# As each platform's documentation shows them; only names, tokens and ids are ours.


def s3_record(bucket: str, key: str, etag: str, name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One record of an S3 event notification: the key URL-encoded, as S3 sends it."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T03:00:00.000Z",
        "eventName": name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "milk-price-raw",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": 1024,
                "eTag": etag,
                "sequencer": uuid.uuid4().hex[:18].upper(),
            },
        },
    }


def s3_notification(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def sqs(*bodies: dict[str, Any]) -> dict[str, Any]:
    """S3 notifications as the bodies of SQS messages, as a queue hands them over."""
    messages = []
    for body in bodies:
        text = json.dumps(body)
        messages.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "MessageReceiptHandle",
                "body": text,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1795748400000",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1795748400001",
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(text.encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:milk-price-uploads",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": messages}


def eventbridge(bucket: str, key: str, etag: str, kind: str = "Object Created") -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": kind,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-27T03:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {
                "key": key,
                "size": 1024,
                "etag": etag,
                "sequencer": "00617F08299329D189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "203.0.113.7",
            "reason": "PutObject",
        },
    }


def blob_data(container: str, blob: str, etag: str) -> dict[str, Any]:
    return {
        "api": "PutBlob",
        "clientRequestId": str(uuid.uuid4()),
        "requestId": str(uuid.uuid4()),
        "eTag": etag,
        "contentType": "text/csv",
        "contentLength": 1024,
        "blobType": "BlockBlob",
        "url": f"https://milkprice.blob.core.windows.net/{container}/{blob}",
        "sequencer": "00000000000004420000000000028963",
        "storageDiagnostics": {"batchId": str(uuid.uuid4())},
    }


def blob_subject(container: str, blob: str) -> str:
    return f"/blobServices/default/containers/{container}/blobs/{blob}"


def blob_cloudevent(container: str, blob: str, etag: str) -> dict[str, Any]:
    """Event Grid's BlobCreated in the CloudEvents 1.0 schema."""
    return {
        "specversion": "1.0",
        "type": "Microsoft.Storage.BlobCreated",
        "source": STORAGE,
        "subject": blob_subject(container, blob),
        "id": str(uuid.uuid4()),
        "time": "2026-11-27T03:00:00.9584103Z",
        "data": blob_data(container, blob, etag),
    }


def blob_event_grid(container: str, blob: str, etag: str) -> dict[str, Any]:
    """Event Grid's BlobCreated in the Event Grid schema."""
    return {
        "topic": STORAGE,
        "subject": blob_subject(container, blob),
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2026-11-27T03:00:00.9584103Z",
        "id": str(uuid.uuid4()),
        "data": blob_data(container, blob, etag),
        "dataVersion": "",
        "metadataVersion": "1",
    }


def finalized(bucket: str, name: str, generation: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Eventarc's finalized event: its attributes and its data."""
    attributes = {
        "specversion": "1.0",
        "type": "google.cloud.storage.object.v1.finalized",
        "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "subject": f"objects/{name}",
        "id": str(uuid.uuid4()),
        "time": "2026-11-27T03:00:00.000Z",
    }
    data = {"bucket": bucket, "name": name, "generation": generation, "size": "1024"}
    return attributes, data


PING_ATTRIBUTES = {
    "specversion": "1.0",
    "type": "dev.knative.sources.ping.v1.event",
    "source": "/apis/v1/namespaces/default/pingsources/milk-price-daily",
    "time": "2026-11-27T03:00:00Z",
}
SCHEDULE = {"trigger": "schedule"}


def binary(attributes: dict[str, str]) -> dict[str, str]:
    """A CloudEvent's attributes as binary-mode headers."""
    return {"Content-Type": "application/json", **{f"ce-{k}": v for k, v in attributes.items()}}


def post(c: Any, doc: Any, content_type: str = "application/json", path: str = "/") -> Any:
    return c.post(path, data=json.dumps(doc), headers={"Content-Type": content_type})


def send_upload(
    shape: str, c: Any, settings: Settings, name: str, token: str, bucket: str = ""
) -> Any:
    """One upload of ``name`` (version ``token``) as the platform of ``shape`` posts it, from
    the settings' bucket or the one named."""
    bucket, etag = bucket or settings.bucket, hashlib.md5(token.encode()).hexdigest()
    if shape == "s3":  # the AWS Lambda Web Adapter posts events to /events
        return post(c, s3_notification(s3_record(bucket, name, etag)), path="/events")
    if shape == "sqs":
        return post(c, sqs(s3_notification(s3_record(bucket, name, etag))), path="/events")
    if shape == "eventbridge":
        return post(c, eventbridge(bucket, name, etag), path="/events")
    if shape == "eventgrid-cloudevent":
        return post(c, blob_cloudevent(bucket, name, f"0x{token}"), CLOUDEVENT)
    if shape == "eventgrid-batch":
        return post(c, [blob_cloudevent(bucket, name, f"0x{token}")], CLOUDEVENTS)
    if shape == "eventgrid-schema":
        return post(c, [blob_event_grid(bucket, name, f"0x{token}")])
    attributes, data = finalized(bucket, name, token)
    if shape == "eventarc-binary":
        return c.post("/", data=json.dumps(data), headers=binary(attributes))
    assert shape == "eventarc-structured", shape
    return post(c, {**attributes, "datacontenttype": "application/json", "data": data}, CLOUDEVENT)


UPLOAD_SHAPES = {
    "s3": "s3",
    "sqs": "s3",
    "eventbridge": "eventbridge",
    "eventgrid-cloudevent": "eventgrid",
    "eventgrid-batch": "eventgrid",
    "eventgrid-schema": "eventgrid",
    "eventarc-binary": "eventarc",
    "eventarc-structured": "eventarc",
}


def left_out(settings: Settings, rec: runner.Recorder, *args: object) -> None:
    """In place of the training: the run reads, claims, archives and records as usual."""
    rec.finish("not_promoted", "training left out by the test")
