"""Reads over plain HTTP: an object's bytes and token, or its token alone, without a cloud SDK.

The predict function reads the pointer, a manifest and two model graphs, then only pointer
tokens; importing a cloud's SDK for that took 120 ms (S3) to 390 ms (Azure) of a cold start
whose bare function takes 200 ms (bench/README.md, "Cold start"). These readers use the
standard library alone and serve every ``store.read`` and ``store.token`` where their
credentials are plain to use:

- Cloud Storage: the emulator (``STORAGE_EMULATOR_HOST``), or Cloud Run and Cloud Functions
  (``K_SERVICE`` set, no ``GOOGLE_APPLICATION_CREDENTIALS``), with the runtime's
  service-account token from the metadata server;
- S3: keys in ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``,
  as Lambda sets them) with a region, requests signed with Signature Version 4;
- Blob Storage: a connection string with ``AccountName`` and ``AccountKey`` (Azurite's
  development account, say), requests signed with the account's Shared Key.

Anything else (a profile, a managed identity, a SAS) reads through the SDK backend, which
does every write and listing everywhere. The tokens are the SDK backends' own: a Cloud
Storage generation, an S3 or Azure ETag without its quotes. A missing object is None; no
answer, a 5xx or a refusal is :class:`StorageUnavailable`, after short retries bounded by
the call's ``timeout``; an answer that is neither the object nor its absence (a redirect,
a refusal) hands the reads to the SDK for the rest of the process (``store.Reads``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Protocol

from milkprice.errors import StorageUnavailable
from milkprice.store import TIMEOUT, Blob, Reader, Refused, etag_token

RETRIED = frozenset({429, 500, 502, 503, 504})
METADATA_HOST = "metadata.google.internal"  # GCE_METADATA_HOST names another
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
AZURE_VERSION = "2021-08-06"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Origin:
    """Where requests go: scheme, host and port of one endpoint, and a path prefix."""

    scheme: str
    host: str
    port: int | None
    prefix: str = ""

    @classmethod
    def of(cls, url: str) -> Origin:
        found = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        return cls(found.scheme, found.hostname or "", found.port, found.path.rstrip("/"))

    @property
    def netloc(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def _once(
    origin: Origin, method: str, path: str, headers: dict[str, str], timeout: float
) -> Answer:
    kind = http.client.HTTPSConnection if origin.scheme == "https" else http.client.HTTPConnection
    connection = kind(origin.host, origin.port, timeout=timeout)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, found, body)
    finally:
        connection.close()


def call(
    origin: Origin,
    method: str,
    path: str,
    sign: SignFn,
    what: str,
    timeout: float,
) -> Answer | None:
    """One request, signed afresh for each try; None for a 404. Retried on no answer or a
    5xx/429 while ``timeout`` lasts (each try gets what is left, up to a third of it)."""
    deadline = time.monotonic() + timeout
    wait, problem = 0.05, ""
    while True:
        left = deadline - time.monotonic()
        try:
            share = max(0.1, min(left, timeout / 3))
            answer = _once(origin, method, path, sign(method, path), share)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if answer.status == 404:
                return None
            if answer.status < 300:
                return answer
            problem = f"HTTP {answer.status}: {answer.body[:200].decode(errors='replace')}"
            if answer.status not in RETRIED:
                raise Refused(f"{what}: storage refused a plain read ({problem})")
        if deadline - time.monotonic() <= wait:
            break
        time.sleep(wait)
        wait *= 2
    raise StorageUnavailable(f"{what}: storage unavailable ({problem})")


class SignFn(Protocol):
    def __call__(self, method: str, path: str) -> dict[str, str]: ...


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="/~")


class EtagReader:
    """S3's and Blob Storage's reads: GET for the bytes, HEAD for the token, an object's
    ETag its token; each signs its own way."""

    def __init__(self, origin: Origin, prefix: str) -> None:
        self.origin, self.prefix = origin, prefix

    def _sign(self, method: str, path: str) -> dict[str, str]:
        raise NotImplementedError

    def read(self, name: str) -> Blob | None:
        path = self.prefix + _quote(name)
        answer = call(self.origin, "GET", path, self._sign, f"reading {name}", TIMEOUT)
        if answer is None:
            return None
        return Blob(name, answer.body, etag_token(answer.headers["etag"]))

    def token(self, name: str, timeout: float) -> str | None:
        path = self.prefix + _quote(name)
        answer = call(self.origin, "HEAD", path, self._sign, f"reading {name}", timeout)
        return None if answer is None else etag_token(answer.headers["etag"])


# ---------------------------------------------------------------- Cloud Storage


class MetadataToken:
    """The runtime's service-account access token, from the metadata server, kept until a
    minute before it expires."""

    def __init__(self) -> None:
        self._origin = Origin.of(os.environ.get("GCE_METADATA_HOST", METADATA_HOST))
        self._lock = threading.Lock()
        self._token, self._until = "", 0.0

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() >= self._until:
                answer = call(
                    self._origin, "GET", TOKEN_PATH, _metadata_headers, "the access token", 5.0
                )
                if answer is None:
                    raise StorageUnavailable("the metadata server gives no access token")
                doc = json.loads(answer.body)
                self._token = str(doc["access_token"])
                self._until = time.monotonic() + float(doc.get("expires_in", 300)) - 60
            return self._token


def _metadata_headers(method: str, path: str) -> dict[str, str]:
    return {"Metadata-Flavor": "Google"}


class GcsReader:
    def __init__(self, bucket: str, origin: Origin, token: MetadataToken | None) -> None:
        self.origin, self.token_source = origin, token
        self.objects = f"{origin.prefix}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/"

    def _sign(self, method: str, path: str) -> dict[str, str]:
        if self.token_source is None:
            return {}
        return {"Authorization": f"Bearer {self.token_source()}"}

    def _path(self, name: str, query: str) -> str:
        return self.objects + urllib.parse.quote(name, safe="") + query

    def read(self, name: str) -> Blob | None:
        path = self._path(name, "?alt=media")
        answer = call(self.origin, "GET", path, self._sign, f"reading {name}", TIMEOUT)
        if answer is None:
            return None
        return Blob(name, answer.body, answer.headers["x-goog-generation"])

    def token(self, name: str, timeout: float) -> str | None:
        path = self._path(name, "?fields=generation")
        answer = call(self.origin, "GET", path, self._sign, f"reading {name}", timeout)
        return None if answer is None else str(json.loads(answer.body)["generation"])


def gcs_reader(bucket: str) -> GcsReader | None:
    if emulator := os.environ.get("STORAGE_EMULATOR_HOST", "").strip():
        return GcsReader(bucket, Origin.of(emulator), None)
    # Cloud Run, and Cloud Functions on it (Knative elsewhere sets K_SERVICE too: a key file
    # named by GOOGLE_APPLICATION_CREDENTIALS is then the SDK's to read)
    if os.environ.get("K_SERVICE") and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return GcsReader(bucket, Origin.of("https://storage.googleapis.com"), MetadataToken())
    return None


# ---------------------------------------------------------------- S3


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class AwsKeys:
    access_key: str
    secret_key: str
    session_token: str
    region: str


def sigv4(keys: AwsKeys, method: str, host: str, path: str, now: datetime) -> dict[str, str]:
    """The headers of an S3 request with no body and no query, signed (Signature Version 4)."""
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    if keys.session_token:
        headers["x-amz-security-token"] = keys.session_token
    names = sorted(headers)
    canonical = "\n".join(
        [method, path, "", *(f"{n}:{headers[n]}" for n in names), "", ";".join(names), EMPTY_SHA256]
    )
    scope = f"{day}/{keys.region}/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    text = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    key = _hmac(f"AWS4{keys.secret_key}".encode(), day)
    for part in (keys.region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={keys.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


class S3Reader(EtagReader):
    def __init__(self, bucket: str, origin: Origin, keys: AwsKeys, path_style: bool) -> None:
        bucket_path = f"/{_quote(bucket)}" if path_style else ""
        super().__init__(origin, f"{origin.prefix}{bucket_path}/")
        self.keys = keys

    def _sign(self, method: str, path: str) -> dict[str, str]:
        return sigv4(self.keys, method, self.origin.netloc, path, datetime.now(UTC))


def s3_reader(bucket: str) -> S3Reader | None:
    env = os.environ
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not (key and secret and region) or env.get("AWS_PROFILE"):
        return None
    keys = AwsKeys(key, secret, env.get("AWS_SESSION_TOKEN", ""), region)
    if endpoint := env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"):
        return S3Reader(bucket, Origin.of(endpoint), keys, path_style=True)
    if "." in bucket:  # a dotted name breaks the virtual host's certificate
        return S3Reader(bucket, Origin.of(f"https://s3.{region}.amazonaws.com"), keys, True)
    return S3Reader(bucket, Origin.of(f"https://{bucket}.s3.{region}.amazonaws.com"), keys, False)


# ---------------------------------------------------------------- Blob Storage


def shared_key(account: str, key: bytes, method: str, path: str, date: str) -> dict[str, str]:
    """The headers of a Blob Storage request with no body and no query, signed with the
    account's Shared Key (the string to sign of service version 2009-09-19 and later)."""
    headers = {"x-ms-date": date, "x-ms-version": AZURE_VERSION}
    canonical_headers = "".join(f"{n}:{headers[n]}\n" for n in sorted(headers))
    text = method + "\n" * 12 + canonical_headers + f"/{account}{path}"
    signature = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()
    return {**headers, "Authorization": f"SharedKey {account}:{signature}"}


class AzureReader(EtagReader):
    def __init__(self, container: str, origin: Origin, account: str, key: bytes) -> None:
        super().__init__(origin, f"{origin.prefix}/{_quote(container)}/")
        self.account, self.key = account, key

    def _sign(self, method: str, path: str) -> dict[str, str]:
        return shared_key(self.account, self.key, method, path, formatdate(usegmt=True))


def azure_reader(container: str) -> AzureReader | None:
    text = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    parts = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
    account, key = parts.get("AccountName", ""), parts.get("AccountKey", "")
    if not (account and key):
        return None
    endpoint = parts.get("BlobEndpoint") or (
        f"{parts.get('DefaultEndpointsProtocol', 'https')}://{account}.blob."
        f"{parts.get('EndpointSuffix', 'core.windows.net')}"
    )
    return AzureReader(container, Origin.of(endpoint), account, base64.b64decode(key))


def reader(cloud: str, bucket: str) -> Reader | None:
    """The cloud's plain reader, or None where only its SDK can read (see the module)."""
    found = {"gcp": gcs_reader, "aws": s3_reader, "azure": azure_reader}.get(cloud)
    return found(bucket) if found else None
