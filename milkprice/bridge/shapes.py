"""The upload events of each cloud, as its event service delivers them to an HTTP endpoint.

The upload bridge (``watcher.Bridge``) sees a new object version under ``raw/`` and asks for
the event its cloud would send: Eventarc's ``google.cloud.storage.object.v1.finalized`` in
binary mode for Cloud Storage, Event Grid's ``Microsoft.Storage.BlobCreated`` in the
CloudEvents 1.0 schema (structured mode) for Blob Storage, an S3 event notification for an
S3-compatible store. S3 itself (and moto) sends its own notifications; locally
``milkprice.local.s3_queue`` relays them, wrapped as Lambda's queue event source does
(:func:`sqs_event`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from milkprice import store
from milkprice.settings import LocalSettings, Settings

FINALIZED = "google.cloud.storage.object.v1.finalized"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
# The local Azure store's one account: Azurite's development account, as
# ``milkprice.local.object_stores.azurite.ACCOUNT`` (a test holds them equal). Named here,
# not imported, so that the bridge and the scheduler, which the train image runs without the
# emulators' extra, never import the emulators' module.
ACCOUNT = "devstoreaccount1"

# (headers, body) of one delivery
Delivery = tuple[dict[str, str], bytes]
Shape = Callable[[LocalSettings, str, store.Meta], Delivery]


def storage_object_data(settings: Settings, name: str, meta: store.Meta) -> dict[str, Any]:
    """The StorageObjectData of one version of ``name``, as Eventarc sends it."""
    return {
        "kind": "storage#object",
        "id": f"{settings.bucket}/{name}/{meta.token}",
        "bucket": settings.bucket,
        "name": name,
        "generation": meta.token,
        "metageneration": meta.revision,
        "contentType": meta.content_type,
        "size": str(meta.size),
        "md5Hash": meta.md5,
        "timeCreated": meta.created,
        "updated": meta.updated,
    }


def eventarc_finalized(settings: Settings, name: str, meta: store.Meta) -> Delivery:
    """Eventarc's binary-mode CloudEvent for one version of ``name``."""
    data = storage_object_data(settings, name, meta)
    event = CloudEvent(
        {
            "type": FINALIZED,
            "source": f"//storage.googleapis.com/projects/_/buckets/{settings.bucket}",
            "subject": f"objects/{name}",
            "id": str(uuid.uuid4()),
            "time": data.get("updated") or datetime.now(UTC).isoformat(),
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        data,
    )
    return _delivery(*to_binary(event))


def event_grid_blob_created(settings: LocalSettings, name: str, meta: store.Meta) -> Delivery:
    """Event Grid's ``BlobCreated`` for one version of ``name``: CloudEvents schema, structured."""
    request = str(uuid.uuid4())
    event = CloudEvent(
        {
            "type": BLOB_CREATED,
            "source": (
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
                f"/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
            ),
            "subject": f"/blobServices/default/containers/{settings.bucket}/blobs/{name}",
            "id": request,
            "time": meta.updated or datetime.now(UTC).isoformat(),
            "specversion": "1.0",
        },
        {
            "api": "PutBlob",
            "clientRequestId": request,
            "requestId": request,
            "eTag": store.token_etag(meta.token),
            "contentType": meta.content_type,
            "contentLength": meta.size,
            "blobType": "BlockBlob",
            "url": f"{_blob_endpoint(settings)}/{settings.bucket}/{name}",
            "sequencer": f"{int(datetime.now(UTC).timestamp() * 1e6):032d}",
            "storageDiagnostics": {"batchId": request},
        },
    )
    return _delivery(*to_structured(event))


def s3_notification(settings: Settings, name: str, meta: store.Meta) -> Delivery:
    """An S3 event notification of one new object, for an S3-compatible store that sends none
    of its own (S3 itself, and moto, send theirs: see ``milkprice.local.s3_queue``)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", ""),
        "eventTime": meta.updated or datetime.now(UTC).isoformat(),
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "raw-created",
            "bucket": {"name": settings.bucket, "arn": f"arn:aws:s3:::{settings.bucket}"},
            "object": {
                "key": quote_plus(name, safe="/"),  # as S3 sends keys: a space as '+'
                "size": meta.size,
                "eTag": meta.token,
                "sequencer": f"{int(datetime.now(UTC).timestamp() * 1e6):016X}",
            },
        },
    }
    body = json.dumps({"Records": [record]}).encode()
    return {"Content-Type": "application/json"}, body


SHAPES: dict[str, Shape] = {
    "gcp": eventarc_finalized,
    "aws": s3_notification,
    "azure": event_grid_blob_created,
}


def sqs_event(messages: Sequence[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """SQS messages as Lambda's queue event source hands them to a function."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def authorization(settings: Settings) -> dict[str, str]:
    """The train token as a bearer header, when one is set: the train image's event endpoint
    then asks for it (a static delivery header on the platforms that send events)."""
    return {"Authorization": f"Bearer {settings.train_token}"} if settings.train_token else {}


def _blob_endpoint(settings: LocalSettings) -> str:
    return f"http://{settings.host}:{settings.azure_port}/{ACCOUNT}"


def _delivery(headers: Any, body: Any) -> Delivery:
    return {str(k): str(v) for k, v in headers.items()}, bytes(body)
