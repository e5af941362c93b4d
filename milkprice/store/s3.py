"""Amazon S3 behind the store interface: a token is an object's ETag, without its quotes.

botocore finds everything in the environment, as it does anywhere: the endpoint
(``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, set for the local emulator, unset for real S3),
the region (``AWS_DEFAULT_REGION``; ``AWS_REGION`` as well, as a function runtime sets it) and
the credentials. A single-part ETag is a digest of the bytes: two writes of equal bytes have one
token, so a writer that must be told apart writes bytes of its own (the pointer's ``write_id``).
botocore alone, not boto3 over it: boto3 adds nothing these calls use, and importing it and
building a session per client cost a cold start a third of a second (one botocore session
builds every client here, its service model loaded once).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from milkprice.errors import Conflict, StorageUnavailable
from milkprice.store import ABSENT, TIMEOUT, Blob, Meta, etag_token, rfc3339, token_etag

# What S3 answers when a conditional request lost its race: the condition failed (412), or a
# concurrent conditional write to the same key was in flight (409).
LOST = {"PreconditionFailed", "ConditionalRequestConflict"}
MISSING = {"NoSuchKey", "NotFound", "404"}


def _config(timeout: float) -> Config:
    """Short, bounded retries: every attempt gets its share of ``timeout`` seconds."""
    attempts = 3 if timeout >= TIMEOUT else 2
    return Config(
        connect_timeout=max(0.1, min(2.0, timeout / (2 * attempts))),
        read_timeout=max(0.2, timeout / attempts),
        retries={"mode": "standard", "max_attempts": attempts},
        max_pool_connections=32,  # the functions write from several threads at once
    )


def _code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def _lost(exc: ClientError, conditional: bool) -> bool:
    """Whether S3 says a conditional request lost its race."""
    code, status = _code(exc)
    # a compare-and-swap on an object deleted meanwhile has lost a race too
    return code in LOST or status == 412 or (conditional and code == "NoSuchKey")


def _wrap(exc: Exception, what: str, conditional: bool = False) -> Exception:
    """A lost race as Conflict; anything else as the store not answering."""
    if isinstance(exc, ClientError) and _lost(exc, conditional):
        return Conflict(f"{what}: changed by someone else meanwhile")
    return StorageUnavailable(f"{what}: storage unavailable ({type(exc).__name__}: {exc})")


def _missing(exc: ClientError) -> bool:
    code, status = _code(exc)
    return code in MISSING or status == 404


class S3Backend:
    def __init__(self, bucket: str) -> None:
        self.name = bucket
        self._clients: dict[float, Any] = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def _session(self) -> Any:
        """The backend's own session (never a process-wide default one), used under the lock."""
        return botocore.session.get_session()

    @functools.cached_property
    def region(self) -> str | None:
        with self._lock:
            found = self._session.get_config_variable("region")
        return found or os.environ.get("AWS_REGION") or None

    def _client(self, timeout: float = TIMEOUT) -> Any:
        """Built on first use (one per timeout): no network or credentials at construction."""
        region = self.region
        with self._lock:  # a session builds one client at a time; the clients are thread-safe
            client = self._clients.get(timeout)
            if client is None:
                client = self._session.create_client("s3", region, config=_config(timeout))
                self._clients[timeout] = client
            return client

    @property
    def client(self) -> Any:
        return self._client(TIMEOUT)

    def read(self, name: str) -> Blob | None:
        try:
            answer = self.client.get_object(Bucket=self.name, Key=name)
            data = answer["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise _wrap(exc, f"reading {name}") from exc
        except (BotoCoreError, OSError) as exc:
            raise _wrap(exc, f"reading {name}") from exc
        return Blob(name, data, etag_token(answer["ETag"]))

    def metadata(self, name: str, timeout: float) -> Meta | None:
        try:
            head = self._client(timeout).head_object(Bucket=self.name, Key=name)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise _wrap(exc, f"reading {name}") from exc
        except (BotoCoreError, OSError) as exc:
            raise _wrap(exc, f"reading {name}") from exc
        # an S3 object is never changed in place: it was created when it was last written
        stamp = rfc3339(head.get("LastModified"))
        return Meta(
            name=name,
            size=int(head.get("ContentLength", 0)),
            token=etag_token(head["ETag"]),
            content_type=head.get("ContentType") or "application/octet-stream",
            created=stamp,
            updated=stamp,
            uploaded=stamp,
        )

    def write(self, name: str, data: bytes, content_type: str, if_token: str | None) -> str:
        condition: dict[str, str] = {}
        if if_token == ABSENT:
            condition["IfNoneMatch"] = "*"
        elif if_token is not None:
            condition["IfMatch"] = token_etag(if_token)
        try:
            answer = self.client.put_object(
                Bucket=self.name, Key=name, Body=data, ContentType=content_type, **condition
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _wrap(exc, f"writing {name}", conditional=bool(condition)) from exc
        return etag_token(answer["ETag"])

    def list(self, prefix: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.name, Prefix=prefix):
                found += [(o["Key"], etag_token(o["ETag"])) for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _wrap(exc, f"listing {prefix}") from exc
        return found

    def copy(self, source: str, token: str, target: str) -> None:
        # The two conditions of the copy keep it honest on S3 itself. An emulator may ignore
        # conditions on copies, so look first as well: the target must not exist yet and the
        # source must still be the asked version (the race left open between these looks and
        # the copy is the one S3's own conditions close).
        if self.metadata(target, TIMEOUT) is not None:
            return
        now = self.metadata(source, TIMEOUT)
        if now is None or now.token != token:
            raise Conflict(f"archiving {source}: version {token} is no longer there")
        try:
            self.client.copy_object(
                Bucket=self.name,
                Key=target,
                CopySource={"Bucket": self.name, "Key": source},
                CopySourceIfMatch=token_etag(token),
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if not _lost(exc, conditional=True):
                raise _wrap(exc, f"archiving {source}") from exc
            if self.metadata(target, TIMEOUT) is not None:
                return  # copied meanwhile: the archive keeps the first copy
            raise Conflict(f"archiving {source}: version {token} is no longer there") from exc
        except (BotoCoreError, OSError) as exc:
            raise _wrap(exc, f"archiving {source}") from exc

    def ensure_bucket(self) -> None:
        client = self.client
        try:
            client.head_bucket(Bucket=self.name)
            return
        except ClientError as exc:
            if not _missing(exc) and _code(exc)[0] != "NoSuchBucket":
                raise _wrap(exc, f"creating bucket {self.name}") from exc
        except (BotoCoreError, OSError) as exc:
            raise _wrap(exc, f"creating bucket {self.name}") from exc
        where: dict[str, Any] = {}
        if self.region and self.region != "us-east-1":  # us-east-1 takes no location constraint
            where["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            client.create_bucket(Bucket=self.name, **where)
        except ClientError as exc:
            if _code(exc)[0] != "BucketAlreadyOwnedByYou":
                raise _wrap(exc, f"creating bucket {self.name}") from exc
        except (BotoCoreError, OSError) as exc:
            raise _wrap(exc, f"creating bucket {self.name}") from exc
