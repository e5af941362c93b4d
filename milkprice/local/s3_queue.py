"""S3's upload events, locally: the bucket's own notifications, through a queue, to the train
function, as on AWS an S3 event notification to SQS and Lambda's queue event source do.

:func:`subscribe` makes the queue and asks the bucket to notify it of every object created
under ``raw/``; S3 (moto, locally) then sends the notifications itself. :class:`QueueRelay`
plays the event source: it takes up to ten messages at a time, POSTs them as one SQS event
(``{"Records": [{"eventSource": "aws:sqs", "body": ...}]}``) to the train function's event
endpoint and deletes them once answered. A delivery that got no answer or a 5xx stays in the
queue and comes back after a backoff: at least once, as on AWS.

With ``invoke``, the relay invokes the train function's Lambda handler under the Runtime
Interface Emulator instead, with the same event, as an event source mapping with
``ReportBatchItemFailures`` does: the messages the answer lists in ``batchItemFailures`` go
back to the queue, the others are deleted; a failed invocation, or an answer that names a
message not in the batch, sends the whole batch back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from milkprice import http_client as http
from milkprice import store
from milkprice.bridge import shapes as event_shapes
from milkprice.local import lambda_rie
from milkprice.settings import Settings

log = logging.getLogger("milkprice.local.s3_queue")

BATCH = 10  # the most SQS hands out at once
VISIBILITY = 900  # seconds a message taken stays hidden: longer than any training
WAIT = 1  # seconds a receive waits for a message (long polling)


def queue_name(settings: Settings) -> str:
    return f"{settings.bucket}-raw-created"


def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2.0, read_timeout=WAIT + 10.0, retries={"mode": "standard"})
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


def subscribe(settings: Settings) -> tuple[str, str]:
    """Make the queue and have the bucket notify it of new objects under raw/ (idempotent).

    Returns the queue's URL and ARN.
    """
    sqs, s3 = _client("sqs"), _client("s3")
    url = sqs.create_queue(
        QueueName=queue_name(settings), Attributes={"VisibilityTimeout": str(VISIBILITY)}
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue = {
        "Id": "raw-created",
        "QueueArn": arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": store.RAW_PREFIX}]}},
    }
    s3.put_bucket_notification_configuration(
        Bucket=settings.bucket, NotificationConfiguration={"QueueConfigurations": [queue]}
    )
    return url, arn


@dataclass
class QueueRelay:
    """Lambda's queue event source, locally: queue messages POSTed in batches to ``url``, or
    with ``invoke`` the invocations URL of an emulator running the train handler."""

    settings: Settings
    url: str
    invoke: bool = False
    deadline: float = 900.0  # seconds one delivery may take (a training)
    window: float = 2.0  # after a first message, gather more for this long
    min_backoff: float = 1.0
    max_backoff: float = 30.0
    delivered: list[int] = field(default_factory=list)  # the statuses answered
    batches: list[list[str]] = field(default_factory=list)  # each batch's message ids
    reported: list[list[str]] = field(default_factory=list)  # those of them to deliver again

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._sqs = _client("sqs")
        self._queue, self._arn = subscribe(self.settings)
        self._region = self._arn.split(":")[3]

    def take(self) -> list[dict[str, Any]]:
        """Up to a batch of messages: the first wait is long polling, then the window."""
        got: list[dict[str, Any]] = []
        end = 0.0
        while len(got) < BATCH and not self._stop.is_set():
            answer = self._sqs.receive_message(
                QueueUrl=self._queue,
                MaxNumberOfMessages=BATCH - len(got),
                WaitTimeSeconds=WAIT,
                AttributeNames=["All"],
            )
            got += answer.get("Messages", [])
            if not got:
                break  # nothing came within the long poll
            end = end or time.monotonic() + self.window
            if time.monotonic() >= end:
                break
        return got

    def step(self) -> int:
        """Deliver one batch, if any; returns the status (0: no answer; -1: nothing to do)."""
        messages = self.take()
        if not messages:
            return -1
        body = json.dumps(event_shapes.sqs_event(messages, self._arn, self._region)).encode()
        keys = ", ".join(_keys(messages))
        deliver = self._invoke if self.invoke else self._post
        status, failed = deliver(body, keys)
        self.delivered.append(status)
        ids = {m["MessageId"] for m in messages}
        self.batches.append(sorted(ids))
        failed = ids if failed is None else failed & ids
        self.reported.append(sorted(failed))
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._queue,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        again = [m for m in messages if m["MessageId"] in failed]
        if again:
            self._later(again, status, ", ".join(_keys(again)), "")
        return status

    def _post(self, body: bytes, keys: str) -> tuple[int, set[str] | None]:
        """POST the event; handled, or a shape it will never take: not resent (no failures);
        no answer or a 5xx: all of it again (None)."""
        headers = {"Content-Type": "application/json", **event_shapes.authorization(self.settings)}
        answer = http.request(self.url, body, headers, self.deadline, method="POST")
        if 0 < answer.status < 500:
            level = logging.INFO if answer.status < 300 else logging.ERROR
            log.log(level, "delivered %s: %s %s", keys, answer.status, _reason(answer.body))
            return answer.status, set()
        log.warning("%s answered %s for %s", self.url, answer.status or answer.error, keys)
        return answer.status, None

    def _invoke(self, body: bytes, keys: str) -> tuple[int, set[str] | None]:
        """Invoke the handler; the messages its batchItemFailures name (None: all of them)."""
        answer = http.request(self.url, body, {"Content-Type": "application/json"}, self.deadline)
        try:
            doc = json.loads(answer.body) if answer.status == 200 else None
        except ValueError:
            doc = None
        failed = lambda_rie.function_error(doc)
        if answer.status != 200 or failed or (doc is not None and not isinstance(doc, dict)):
            why = failed or answer.error or f"{answer.status} {answer.body[:200]!r}"
            log.warning("invoking the train function for %s failed: %s", keys, why)
            return answer.status, None
        items = (doc or {}).get("batchItemFailures") or []
        named = [i.get("itemIdentifier") if isinstance(i, dict) else None for i in items]
        if not all(isinstance(n, str) and n for n in named):
            log.warning("the train function answered %s for %s: all of it again", doc, keys)
            return answer.status, None
        log.info("delivered %s: %d of the batch to retry", keys, len(named))
        return answer.status, set(map(str, named))

    def _later(self, messages: list[dict[str, Any]], status: int, keys: str, why: str) -> None:
        """Back in the queue after a backoff that grows with each receive."""
        for m in messages:
            receives = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            delay = min(self.min_backoff * 2 ** (receives - 1), self.max_backoff)
            self._sqs.change_message_visibility(
                QueueUrl=self._queue, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=int(delay)
            )
        log.warning("%s back in the queue (%s)", keys or "the messages", status or why)

    def run(self) -> None:
        log.info("relay: queue %s (raw/ of %s) -> %s", self._queue, self.settings.bucket, self.url)
        delay = self.min_backoff
        while not self._stop.is_set():
            try:
                self.step()
                delay = self.min_backoff
            except Exception as exc:  # the emulator away: keep going, or uploads stop training
                log.warning("relay: the queue did not answer (%s); trying again", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="relay", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def _keys(messages: list[dict[str, Any]]) -> list[str]:
    """The object keys the messages announce, for the log."""
    found = []
    for m in messages:
        try:
            doc = json.loads(m["Body"])
        except ValueError:
            continue
        for record in doc.get("Records", []) if isinstance(doc, dict) else []:
            key = str(record.get("s3", {}).get("object", {}).get("key", "?"))
            found.append(unquote_plus(key))  # sent URL-encoded
        if isinstance(doc, dict) and doc.get("Event"):
            found.append(str(doc["Event"]))
    return found


def _reason(body: bytes | None) -> str:
    try:
        doc = json.loads(body or b"")
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    return str(doc.get("outcome") or doc.get("ignored") or doc.get("error") or "")
