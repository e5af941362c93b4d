"""The bucket: the only thing the two functions share, behind one small interface.

Layout (see the README): ``raw/`` holds the three input files, ``archive/raw/`` a copy of every
raw object a model was trained on, ``models/<version>/`` the artifacts of one training,
``models/current.json`` the pointer to the serving version, ``runs/`` one record per training.

Every object read comes with its version **token**, taken from the same response as the bytes;
a token is opaque outside its backend (a Cloud Storage generation is one kind). Writes are plain,
create-only, or a compare-and-swap on a token; a lost race is always :class:`Conflict`, a store
that does not answer :class:`StorageUnavailable`. The backend is chosen by settings and built
once, lazily: a function imports only its own cloud's SDK. This package imports no pandas or
scikit-learn: the predict function uses it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from milkprice import schema
from milkprice.errors import StorageUnavailable
from milkprice.settings import Settings

log = logging.getLogger("milkprice.store")

RAW_FILES = schema.RAW_FILES  # the three objects under raw/
RAW_PREFIX = "raw/"
ARCHIVE_PREFIX = "archive/"
MODELS_PREFIX = "models/"
POINTER = "models/current.json"
RUNS_PREFIX = "runs/"
CLAIMS_PREFIX = "runs/inputs/"
TIMEOUT = 10.0  # seconds one call may take, retries included, off the request path


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the token of exactly those bytes."""

    name: str
    data: bytes
    token: str


@dataclass(frozen=True)
class Meta:
    """What a store says of an object without sending its bytes."""

    name: str
    size: int
    token: str
    content_type: str
    created: str  # RFC 3339, UTC
    updated: str
    md5: str = ""  # base64, where the store gives one
    revision: str = "1"  # of the metadata (Cloud Storage's metageneration), where there is one
    # when the store took this version's bytes, by its own clock (RFC 3339, UTC): what orders
    # two versions of one name, whose tokens are opaque. Not ``created`` everywhere (an Azure
    # blob keeps its creation time across overwrites) nor ``updated`` (a Cloud Storage
    # metadata change moves it): each backend says which of its times it is.
    uploaded: str = ""


class Backend(Protocol):
    """The operations the system needs from an object store; one bucket (or container)."""

    def read(self, name: str) -> Blob | None: ...

    def metadata(self, name: str, timeout: float) -> Meta | None: ...

    def write(self, name: str, data: bytes, content_type: str, if_token: str | None) -> str:
        """Store and return the new token. ``if_token``: None writes whatever is there,
        ``ABSENT`` creates only, a token replaces only that version."""
        ...

    def list(self, prefix: str) -> list[tuple[str, str]]: ...

    def copy(self, source: str, token: str, target: str) -> None:
        """Copy the ``token`` version of ``source`` to ``target`` unless ``target`` exists."""
        ...

    def ensure_bucket(self) -> None: ...


class Reader(Protocol):
    """Reads alone, without the cloud's SDK (``plain``): the same blobs and tokens."""

    def read(self, name: str) -> Blob | None: ...

    def token(self, name: str, timeout: float) -> str | None: ...


class Refused(StorageUnavailable):
    """A plain read the store answered with neither the object nor its absence: a redirect
    to another region, a signature or a policy it will not take. The SDK reads instead."""


class Sdk:
    """Where a read falls to the SDK (:class:`Reads`)."""


SDK = Sdk()
T = TypeVar("T")


ABSENT = "\0absent"  # as ``if_token``: the object must not exist yet


@functools.lru_cache(maxsize=8)
def _backend(cloud: str, bucket: str, project: str) -> Backend:
    if cloud == "gcp":
        from milkprice.store.gcs import GcsBackend  # google-cloud-storage, imported here only

        return GcsBackend(bucket, project)
    if cloud == "aws":
        from milkprice.store.s3 import S3Backend  # botocore, imported here only

        return S3Backend(bucket)
    if cloud == "azure":
        from milkprice.store.azure import AzureBackend  # azure-storage-blob, imported here only

        return AzureBackend(bucket)  # the bucket's name is the container's
    raise ValueError(f"unknown cloud {cloud!r}")


class Reads:
    """One bucket's reads: over plain HTTP where its credentials allow (``plain``), else,
    and for good once the store refuses a plain read, through the SDK backend."""

    def __init__(self, plain: Reader | None, sdk: Callable[[], Backend]) -> None:
        self.plain, self.sdk = plain, sdk

    def _plainly(self, attempt: Callable[[Reader], T]) -> T | Sdk:
        found = self.plain
        if found is None:
            return SDK
        try:
            return attempt(found)
        except Refused as exc:  # not an outage: the SDK follows redirects, finds more keys
            log.warning("%s; reading through the SDK from now on", exc.message)
            self.plain = None
            return SDK

    def read(self, name: str) -> Blob | None:
        found = self._plainly(lambda r: r.read(name))
        return self.sdk().read(name) if isinstance(found, Sdk) else found

    def token(self, name: str, timeout: float) -> str | None:
        found = self._plainly(lambda r: r.token(name, timeout))
        if not isinstance(found, Sdk):
            return found
        meta = self.sdk().metadata(name, timeout)
        return None if meta is None else meta.token


@functools.lru_cache(maxsize=8)
def _reads(cloud: str, bucket: str, project: str) -> Reads:
    from milkprice.store import plain  # the standard library only: no SDK on a cold start

    return Reads(plain.reader(cloud, bucket), lambda: _backend(cloud, bucket, project))


def reset() -> None:
    """Forget the built clients (a test that starts its own emulator)."""
    _backend.cache_clear()
    _reads.cache_clear()


def backend(settings: Settings) -> Backend:
    """The settings' store, built on first use and kept for the process."""
    return _backend(settings.cloud, settings.bucket, settings.project)


def reads(settings: Settings) -> Reads:
    """The settings' bucket's reads, built on first use and kept for the process."""
    return _reads(settings.cloud, settings.bucket, settings.project)


def read(settings: Settings, name: str) -> Blob | None:
    """The object's bytes and token, or None when it does not exist."""
    return reads(settings).read(name)


def metadata(settings: Settings, name: str, timeout: float = TIMEOUT) -> Meta | None:
    """The live object's size, token and times, or None; no download.

    A caller on a request path passes a shorter ``timeout``.
    """
    return backend(settings).metadata(name, timeout)


def token(settings: Settings, name: str, timeout: float = TIMEOUT) -> str | None:
    """The live object's token, or None; no download."""
    return reads(settings).token(name, timeout)


def write(
    settings: Settings, name: str, data: bytes, content_type: str = "application/octet-stream"
) -> str:
    """Store ``data`` whatever is there; the new token."""
    return backend(settings).write(name, data, content_type, None)


def create(
    settings: Settings, name: str, data: bytes, content_type: str = "application/octet-stream"
) -> str:
    """Store ``data`` only if ``name`` does not exist; else :class:`Conflict`."""
    return backend(settings).write(name, data, content_type, ABSENT)


def swap(
    settings: Settings, name: str, data: bytes, content_type: str, expected: str | None
) -> str:
    """Compare-and-swap: replace the ``expected`` version (None: create only); else Conflict."""
    return backend(settings).write(
        name, data, content_type, ABSENT if expected is None else expected
    )


def copy(settings: Settings, source: str, token: str, target: str) -> None:
    backend(settings).copy(source, token, target)


def list_names(settings: Settings, prefix: str) -> list[tuple[str, str]]:
    """(name, token) of every object under ``prefix``."""
    return backend(settings).list(prefix)


def ensure_bucket(settings: Settings) -> None:
    """Create the bucket if missing (the local stack and the tests; real buckets exist)."""
    backend(settings).ensure_bucket()


# ---------------------------------------------------------------- for the backends


def etag_token(etag: str) -> str:
    """An ETag as a token: without its quotes, since tokens also name archived objects."""
    return etag.strip('"')


def token_etag(token: str) -> str:
    return f'"{token}"'


def rfc3339(when: datetime | None) -> str:
    return when.isoformat().replace("+00:00", "Z") if when else ""


def model_path(version: str, file: str) -> str:
    return f"{MODELS_PREFIX}{version}/{file}"


def archive_path(name: str, token: str) -> str:
    return f"{ARCHIVE_PREFIX}{name}/{token}"
