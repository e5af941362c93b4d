"""The bucket: the only thing the two functions share.

Layout (see the README): ``raw/`` holds the three input files, ``archive/raw/`` a copy of every
raw generation a model was trained on, ``models/<version>/`` the artifacts of one training,
``models/current.json`` the pointer to the serving version, ``runs/`` one record per training.

The client talks to real Cloud Storage, or to fake-gcs-server when ``STORAGE_EMULATOR_HOST``
is set (google-cloud-storage reads that variable itself). This module imports no pandas or
scikit-learn: the predict function uses it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import storage

from milkprice import schema
from milkprice.errors import Conflict, StorageUnavailable
from milkprice.settings import Settings

RAW_FILES = schema.RAW_FILES  # the three objects under raw/
RAW_PREFIX = "raw/"
ARCHIVE_PREFIX = "archive/"
MODELS_PREFIX = "models/"
POINTER = "models/current.json"
RUNS_PREFIX = "runs/"
CLAIMS_PREFIX = "runs/inputs/"

# Short, bounded retries: a function must answer even when the bucket is away.
RETRY = Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=10.0)
TIMEOUT = 10.0


@functools.lru_cache(maxsize=4)
def client(project: str) -> storage.Client:
    """One client per process, built on first use."""
    return storage.Client(project=project)


def bucket(settings: Settings) -> storage.Bucket:
    return client(settings.project).bucket(settings.bucket)


@dataclass(frozen=True)
class Blob:
    name: str
    data: bytes
    generation: int


def _wrap(exc: Exception, what: str) -> Exception:
    if isinstance(exc, gexc.PreconditionFailed):
        return Conflict(f"{what}: changed by someone else meanwhile")
    return StorageUnavailable(f"{what}: storage unavailable ({type(exc).__name__}: {exc})")


def read(settings: Settings, name: str, generation: int | None = None) -> Blob | None:
    """The object's bytes and generation, or None when it does not exist."""
    blob = bucket(settings).blob(name, generation=generation)
    try:
        data = blob.download_as_bytes(retry=RETRY, timeout=TIMEOUT)
    except gexc.NotFound:
        return None
    except (gexc.GoogleAPIError, OSError) as exc:
        raise _wrap(exc, f"reading {name}") from exc
    return Blob(name, data, int(blob.generation or 0))


def _metadata(settings: Settings, name: str, retry: Retry, timeout: float) -> Any:
    """The live object's metadata (a google-cloud-storage Blob), or None; no download."""
    try:
        return bucket(settings).get_blob(name, retry=retry, timeout=timeout)
    except (gexc.GoogleAPIError, OSError) as exc:
        raise _wrap(exc, f"reading {name}") from exc


def size(settings: Settings, name: str) -> tuple[int, int] | None:
    """(size in bytes, generation) of the live object, or None; no download."""
    blob = _metadata(settings, name, RETRY, TIMEOUT)
    return None if blob is None else (int(blob.size or 0), int(blob.generation))


def generation(
    settings: Settings, name: str, retry: Retry = RETRY, timeout: float = TIMEOUT
) -> int | None:
    """The live generation of an object, or None; a metadata call, no download.

    A caller on a request path passes a shorter ``retry`` and ``timeout``.
    """
    blob = _metadata(settings, name, retry, timeout)
    return None if blob is None else int(blob.generation)


def write(
    settings: Settings,
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    if_generation_match: int | None = None,
) -> int:
    """Upload and return the new generation.

    ``if_generation_match=0`` creates only if absent; a generation replaces only that one.
    """
    blob = bucket(settings).blob(name)
    # A conditional write is safe to retry; an unconditional one only if nothing reads it
    # concurrently, which holds for everything written here.
    try:
        blob.upload_from_string(
            data,
            content_type=content_type,
            if_generation_match=if_generation_match,
            retry=RETRY,
            timeout=TIMEOUT,
        )
    except (gexc.GoogleAPIError, OSError) as exc:
        raise _wrap(exc, f"writing {name}") from exc
    return int(blob.generation or 0)


def read_json(settings: Settings, name: str) -> tuple[Any, int] | None:
    blob = read(settings, name)
    return None if blob is None else (json.loads(blob.data), blob.generation)


def write_json(
    settings: Settings, name: str, doc: Any, if_generation_match: int | None = None
) -> int:
    data = json.dumps(doc, indent=2, sort_keys=False).encode()
    return write(settings, name, data, "application/json", if_generation_match)


def copy(settings: Settings, source: str, source_generation: int, target: str) -> None:
    """Copy one generation of an object to ``target`` unless ``target`` exists already."""
    b = bucket(settings)
    try:
        b.copy_blob(
            b.blob(source),
            b,
            target,
            source_generation=source_generation,
            if_generation_match=0,
            retry=RETRY,
            timeout=TIMEOUT,
        )
    except gexc.PreconditionFailed:
        return
    except (gexc.GoogleAPIError, OSError) as exc:
        raise _wrap(exc, f"archiving {source}") from exc


def list_names(settings: Settings, prefix: str) -> list[tuple[str, int]]:
    try:
        blobs = client(settings.project).list_blobs(
            settings.bucket, prefix=prefix, retry=RETRY, timeout=TIMEOUT
        )
        return [(b.name, int(b.generation)) for b in blobs]
    except (gexc.GoogleAPIError, OSError) as exc:
        raise _wrap(exc, f"listing {prefix}") from exc


def ensure_bucket(settings: Settings) -> None:
    """Create the bucket if missing (the local stack and the tests; real buckets exist)."""
    c = client(settings.project)
    try:
        if c.lookup_bucket(settings.bucket) is None:
            c.create_bucket(settings.bucket)
    except gexc.Conflict:
        pass
    except (gexc.GoogleAPIError, OSError) as exc:
        raise _wrap(exc, f"creating bucket {settings.bucket}") from exc


def model_path(version: str, file: str) -> str:
    return f"{MODELS_PREFIX}{version}/{file}"


def archive_path(name: str, generation: int) -> str:
    return f"{ARCHIVE_PREFIX}{name}/{generation}"
