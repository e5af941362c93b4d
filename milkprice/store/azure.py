"""Azure Blob Storage behind the store interface: the bucket is a container, a token an ETag.

The account comes from ``AZURE_STORAGE_CONNECTION_STRING`` (the local emulator's development
string, or a real account's key) or, without one, from ``AZURE_STORAGE_ACCOUNT_URL`` with the
identity azure-identity's ``DefaultAzureCredential`` finds (a managed identity in Container
Apps; ``AZURE_CLIENT_ID`` picks a user-assigned one). An Azure ETag changes with every
write, even of equal bytes. Tokens are kept without the quotes an ETag carries, so that they
can name archived objects.
"""

from __future__ import annotations

import base64
import functools
import os
import threading
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings, LinearRetry

from milkprice.errors import ConfigError, Conflict, StorageUnavailable
from milkprice.store import ABSENT, TIMEOUT, Blob, Meta, etag_token, rfc3339, token_etag

CONNECTION = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_URL = "AZURE_STORAGE_ACCOUNT_URL"


def _options(timeout: float) -> dict[str, Any]:
    """Short, bounded retries: every attempt gets its share of ``timeout`` seconds.

    The SDK's own default waits 15 s and more between attempts; a function must answer
    even when the account is away.
    """
    retries = 2 if timeout >= TIMEOUT else 1
    attempts = retries + 1
    backoff = min(0.5, timeout / 10)
    return {
        "connection_timeout": max(0.1, min(2.0, timeout / (2 * attempts))),
        "read_timeout": max(0.2, timeout / attempts),
        "retry_policy": LinearRetry(
            backoff=backoff,  # type: ignore[arg-type]  # seconds: a float works
            random_jitter_range=backoff / 2,  # type: ignore[arg-type]
            retry_total=retries,
        ),
    }


def _wrap(exc: Exception, what: str, conditional: bool = False) -> Exception:
    """A lost race as Conflict; anything else as the store not answering."""
    lost = (ResourceExistsError, ResourceModifiedError)
    if isinstance(exc, lost) or (conditional and isinstance(exc, ResourceNotFoundError)):
        return Conflict(f"{what}: changed by someone else meanwhile")
    return StorageUnavailable(f"{what}: storage unavailable ({type(exc).__name__}: {exc})")


class AzureBackend:
    def __init__(self, container: str) -> None:
        self.name = container
        self._containers: dict[float, ContainerClient] = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def account(self) -> tuple[str, Any]:
        """(connection string, None), or (account URL, a credential of the identity)."""
        if found := os.environ.get(CONNECTION, ""):
            return found, None
        if url := os.environ.get(ACCOUNT_URL, ""):
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise ConfigError(
                    f"{ACCOUNT_URL} needs azure-identity (the azure extra installs it)"
                ) from None
            return url, DefaultAzureCredential()
        raise ConfigError(
            f"neither {CONNECTION} nor {ACCOUNT_URL} is set: one names the storage account"
        )

    def _service(self, timeout: float) -> BlobServiceClient:
        where, credential = self.account
        if credential is None:
            return BlobServiceClient.from_connection_string(where, **_options(timeout))
        return BlobServiceClient(where, credential=credential, **_options(timeout))

    def _container(self, timeout: float = TIMEOUT) -> ContainerClient:
        """Built on first use (one per timeout): no network or credentials at construction."""
        with self._lock:
            client = self._containers.get(timeout)
            if client is None:
                service = self._service(timeout)
                client = self._containers[timeout] = service.get_container_client(self.name)
            return client

    @property
    def container(self) -> ContainerClient:
        return self._container(TIMEOUT)

    def read(self, name: str) -> Blob | None:
        try:
            # a large blob comes in chunks, each on the condition of the first one's ETag
            download = self.container.download_blob(name, max_concurrency=1)
            data = download.readall()
        except ResourceNotFoundError:
            return None
        except (AzureError, OSError) as exc:
            raise _wrap(exc, f"reading {name}") from exc
        return Blob(name, data, etag_token(download.properties.etag))

    def metadata(self, name: str, timeout: float) -> Meta | None:
        try:
            found = self._container(timeout).get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        except (AzureError, OSError) as exc:
            raise _wrap(exc, f"reading {name}") from exc
        settings = found.content_settings
        md5 = settings.content_md5
        return Meta(
            name=name,
            size=int(found.size or 0),
            token=etag_token(found.etag),
            content_type=settings.content_type or "application/octet-stream",
            created=rfc3339(found.creation_time),
            updated=rfc3339(found.last_modified),
            md5=base64.b64encode(bytes(md5)).decode() if md5 else "",
            uploaded=rfc3339(found.last_modified),  # creation_time survives an overwrite
        )

    def write(self, name: str, data: bytes, content_type: str, if_token: str | None) -> str:
        condition: dict[str, Any] = {}
        if if_token == ABSENT:
            condition["match_condition"] = MatchConditions.IfMissing
        elif if_token is not None:
            condition["etag"] = token_etag(if_token)
            condition["match_condition"] = MatchConditions.IfNotModified
        try:
            answer = self.container.get_blob_client(name).upload_blob(
                data,
                overwrite=True,  # the condition, when there is one, decides
                content_settings=ContentSettings(content_type=content_type),
                **condition,
            )
        except (AzureError, OSError) as exc:
            raise _wrap(exc, f"writing {name}", conditional=bool(condition)) from exc
        return etag_token(answer["etag"])

    def list(self, prefix: str) -> list[tuple[str, str]]:
        try:
            return [
                (b.name, etag_token(b.etag))
                for b in self.container.list_blobs(name_starts_with=prefix)
            ]
        except (AzureError, OSError) as exc:
            raise _wrap(exc, f"listing {prefix}") from exc

    def copy(self, source: str, token: str, target: str) -> None:
        # Read that version and create the target from it: plain, and the same on the emulator
        # as on Azure (a server-side copy's source conditions are not honoured everywhere).
        if self.metadata(target, TIMEOUT) is not None:
            return
        try:
            download = self.container.download_blob(
                source,
                etag=token_etag(token),
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
            data = download.readall()
        except (AzureError, OSError) as exc:
            if isinstance(exc, (ResourceModifiedError, ResourceNotFoundError)):
                raise Conflict(f"archiving {source}: version {token} is no longer there") from exc
            raise _wrap(exc, f"archiving {source}") from exc
        kind = download.properties.content_settings.content_type or "application/octet-stream"
        try:
            self.write(target, data, kind, ABSENT)
        except Conflict:
            return  # copied meanwhile: the archive keeps the first copy

    def ensure_bucket(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except (AzureError, OSError) as exc:
            raise _wrap(exc, f"creating container {self.name}") from exc
