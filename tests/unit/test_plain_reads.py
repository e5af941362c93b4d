"""The plain readers' signatures and credentials (``milkprice.store.plain``); their reads
against the emulators are in tests/function/test_backends.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from milkprice.store import plain

KEYS = plain.AwsKeys("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", "eu-west-1")


@pytest.mark.parametrize("session_token", ["", "FQoGZXIvYXdzE//session+token="])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("127.0.0.1:9000", "/milk-price/models/current.json"),
        ("milk.s3.eu-west-1.amazonaws.com", "/raw/a%20b%2Bc%23d.csv"),
    ],
)
def test_a_signature_v4_is_the_sdk_s(session_token: str, method: str, host: str, path: str) -> None:
    """The same request signed by botocore's own signer gives the same Authorization."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    keys = plain.AwsKeys(KEYS.access_key, KEYS.secret_key, session_token, KEYS.region)
    request = AWSRequest(method=method, url=f"https://{host}{path}")
    request.headers["X-Amz-Content-SHA256"] = plain.EMPTY_SHA256
    credentials = Credentials(keys.access_key, keys.secret_key, session_token or None)
    S3SigV4Auth(credentials, "s3", keys.region).add_auth(request)
    # signed at the moment the SDK's signer chose, which it reads from its own clock
    when = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    mine = plain.sigv4(keys, method, host, path, when)
    assert mine["Authorization"] == request.headers["Authorization"]
    assert mine.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")
    other = plain.sigv4(keys, method, host, path + "x", when)
    assert other["Authorization"] != mine["Authorization"]


def test_a_shared_key_signs_the_azure_string_to_sign() -> None:
    """Written out from the service's rules: twelve empty standard headers for a GET with no
    body, the x-ms- headers sorted, then /account/path (Azurite's path holds the account)."""
    key = base64.b64decode(base64.b64encode(b"k" * 64))
    path = "/devstoreaccount1/milk-price/models/current.json"
    date = "Sun, 06 Dec 2026 05:30:00 GMT"
    found = plain.shared_key("devstoreaccount1", key, "GET", path, date)
    text = (
        "GET" + "\n" * 12 + f"x-ms-date:{date}\nx-ms-version:{plain.AZURE_VERSION}\n"
        "/devstoreaccount1" + path
    )
    expected = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()
    assert found["Authorization"] == f"SharedKey devstoreaccount1:{expected}"
    other = plain.shared_key("devstoreaccount1", key, "HEAD", path, date)
    assert other["Authorization"] != found["Authorization"]


@pytest.fixture
def metadata_server() -> Iterator[list[dict[str, str]]]:
    """A stand-in for the runtime's metadata server: each call gets a new token that lasts
    61 s, so the reader asks again a second later; the calls' headers are kept."""
    calls: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append({"path": self.path, **dict(self.headers)})
            body = json.dumps({"access_token": f"t{len(calls)}", "expires_in": 61}).encode()
            self.send_response(200 if self.path == plain.TOKEN_PATH else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["GCE_METADATA_HOST"] = f"127.0.0.1:{server.server_address[1]}"
    yield calls
    server.shutdown()


def test_cloud_storage_on_its_runtime_reads_with_the_metadata_server_s_token(
    metadata_server: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    assert plain.gcs_reader("milk") is None  # neither an emulator nor a runtime: the SDK
    os.environ["K_SERVICE"] = "predict"
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = "/secrets/key.json"  # a key file: the SDK's
    assert plain.gcs_reader("milk") is None
    del os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    reader = plain.gcs_reader("milk")
    assert reader is not None and reader.origin.netloc == "storage.googleapis.com"
    assert reader.token_source is not None
    clock = [1000.0]
    monkeypatch.setattr(plain.time, "monotonic", lambda: clock[0])
    assert reader._sign("GET", "/x") == {"Authorization": "Bearer t1"}
    assert reader._sign("GET", "/y") == {"Authorization": "Bearer t1"}  # kept
    clock[0] += 2  # a minute before its expiry: a new one
    assert reader._sign("GET", "/x") == {"Authorization": "Bearer t2"}
    assert [c["Metadata-Flavor"] for c in metadata_server] == ["Google", "Google"]


def test_each_cloud_reads_plainly_only_with_plain_credentials() -> None:
    for name in [n for n in os.environ if n.startswith(("AWS_", "AZURE_"))]:
        del os.environ[name]
    assert plain.reader("aws", "milk") is None
    os.environ |= {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    assert plain.reader("aws", "milk") is None  # no region
    os.environ["AWS_REGION"] = "eu-west-1"
    found = plain.reader("aws", "milk")
    assert isinstance(found, plain.S3Reader)
    assert (found.origin.netloc, found.prefix) == ("milk.s3.eu-west-1.amazonaws.com", "/")
    dotted = plain.reader("aws", "milk.price")
    assert isinstance(dotted, plain.S3Reader) and dotted.prefix == "/milk.price/"
    os.environ["AWS_PROFILE"] = "ops"  # a profile's credentials are the SDK's to find
    assert plain.reader("aws", "milk") is None
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = (
        "BlobEndpoint=https://x/;SharedAccessSignature=sv"
    )
    assert plain.reader("azure", "milk") is None  # a SAS: the SDK
    key = base64.b64encode(b"k").decode()
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = f"AccountName=acct;AccountKey={key}"
    azure = plain.reader("azure", "milk")
    assert isinstance(azure, plain.AzureReader)
    assert (azure.origin.netloc, azure.prefix) == ("acct.blob.core.windows.net", "/milk/")
