"""Google Cloud Storage behind the store interface: a token is an object's generation.

The client talks to real Cloud Storage, or to the local emulator when ``STORAGE_EMULATOR_HOST``
is set (google-cloud-storage reads that variable itself).
"""

from __future__ import annotations

import functools
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import storage

from milkprice.errors import Conflict, StorageUnavailable
from milkprice.store import ABSENT, TIMEOUT, Blob, Meta, rfc3339

# Short, bounded retries: a function must answer even when the bucket is away.
RETRY = Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=TIMEOUT)


def _wrap(exc: Exception, what: str) -> Exception:
    if isinstance(exc, gexc.PreconditionFailed):
        return Conflict(f"{what}: changed by someone else meanwhile")
    return StorageUnavailable(f"{what}: storage unavailable ({type(exc).__name__}: {exc})")


def _retry(timeout: float) -> Retry:
    """The usual retry, cut to ``timeout`` seconds in all (a request path passes ~1 s)."""
    if timeout >= TIMEOUT:
        return RETRY
    return Retry(initial=0.05, maximum=timeout / 4, multiplier=2.0, timeout=timeout)


def _generation(token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise Conflict(f"{token!r} is not a version of this bucket") from None


class GcsBackend:
    def __init__(self, bucket: str, project: str) -> None:
        self.name = bucket
        self.project = project

    @functools.cached_property
    def client(self) -> storage.Client:
        """Built on first use: no network and no credentials at import or construction."""
        return storage.Client(project=self.project)

    @property
    def bucket(self) -> storage.Bucket:
        return self.client.bucket(self.name)

    def read(self, name: str) -> Blob | None:
        blob = self.bucket.blob(name)
        try:
            data = blob.download_as_bytes(retry=RETRY, timeout=TIMEOUT)
        except gexc.NotFound:
            return None
        except (gexc.GoogleAPIError, OSError) as exc:
            raise _wrap(exc, f"reading {name}") from exc
        return Blob(name, data, str(blob.generation or 0))

    def metadata(self, name: str, timeout: float) -> Meta | None:
        try:
            blob: Any = self.bucket.get_blob(name, retry=_retry(timeout), timeout=timeout)
        except (gexc.GoogleAPIError, OSError) as exc:
            raise _wrap(exc, f"reading {name}") from exc
        if blob is None:
            return None
        return Meta(
            name=name,
            size=int(blob.size or 0),
            token=str(blob.generation),
            content_type=blob.content_type or "application/octet-stream",
            created=rfc3339(blob.time_created),
            updated=rfc3339(blob.updated),
            md5=blob.md5_hash or "",
            revision=str(blob.metageneration or 1),
            uploaded=rfc3339(blob.time_created),  # every generation is an object of its own
        )

    def write(self, name: str, data: bytes, content_type: str, if_token: str | None) -> str:
        blob = self.bucket.blob(name)
        match = None if if_token is None else 0 if if_token == ABSENT else _generation(if_token)
        # A conditional write is safe to retry; an unconditional one only if nothing reads it
        # concurrently, which holds for everything written here.
        try:
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=match,
                retry=RETRY,
                timeout=TIMEOUT,
            )
        except (gexc.GoogleAPIError, OSError) as exc:
            raise _wrap(exc, f"writing {name}") from exc
        return str(blob.generation or 0)

    def list(self, prefix: str) -> list[tuple[str, str]]:
        try:
            blobs = self.client.list_blobs(self.name, prefix=prefix, retry=RETRY, timeout=TIMEOUT)
            return [(b.name, str(b.generation)) for b in blobs]
        except (gexc.GoogleAPIError, OSError) as exc:
            raise _wrap(exc, f"listing {prefix}") from exc

    def copy(self, source: str, token: str, target: str) -> None:
        b = self.bucket
        # The precondition alone keeps a copy from overwriting on Cloud Storage; the local
        # emulator ignores it on copies, so look first (both copies of one key hold one token's
        # bytes: the race left open costs nothing).
        if self.metadata(target, TIMEOUT) is not None:
            return
        try:
            b.copy_blob(
                b.blob(source),
                b,
                target,
                source_generation=_generation(token),
                if_generation_match=0,
                retry=RETRY,
                timeout=TIMEOUT,
            )
        except gexc.PreconditionFailed:
            return  # copied before: the archive keeps the first copy
        except (gexc.GoogleAPIError, OSError) as exc:
            raise _wrap(exc, f"archiving {source}") from exc

    def ensure_bucket(self) -> None:
        client = self.client
        try:
            if client.lookup_bucket(self.name) is None:
                client.create_bucket(self.name)
        except gexc.Conflict:
            pass
        except (gexc.GoogleAPIError, OSError) as exc:
            raise _wrap(exc, f"creating bucket {self.name}") from exc
