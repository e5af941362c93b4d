"""One store contract, three clouds: every backend against its real local emulator.

Cloud Storage runs on fake-gcs-server (the session ``gcs`` fixture), S3 on moto's server and
Azure Blob Storage on Azurite, each started once for the session on a free port. Every test
gets a bucket (a container, on Azure) of its own.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from milkprice import contract, store
from milkprice.errors import ConfigError, Conflict, MilkPriceError, StorageUnavailable
from milkprice.local import processes
from milkprice.local.object_stores import azurite as azurite_server
from milkprice.local.object_stores import moto_server
from milkprice.settings import Settings
from tests.support import clouds
from tests.support.buckets import new_settings
from tests.support.paths import RELEASE

CLOUDS = ("gcp", "aws", "azure")
MANIFEST = RELEASE / "manifest.json"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port; the variables boto3 needs to reach it."""
    proc, env = clouds.start("aws", tmp_path_factory.mktemp("moto"))
    yield env
    processes.stop([proc])


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite's blob service on a free port (installed with npm on first use)."""
    proc, env = clouds.start("azure", tmp_path_factory.mktemp("azurite"))
    yield env
    processes.stop([proc])


@pytest.fixture(params=CLOUDS)
def bucket(request: pytest.FixtureRequest, gcs: str) -> Iterator[Settings]:
    """A new bucket on one cloud's emulator, its client built afresh.

    ``gcs`` is asked for here, not looked up when needed: the session fixture sets its variable
    once, and only before any test's environment is saved does it outlive the test.
    """
    cloud = request.param
    if cloud != "gcp":
        os.environ.update(request.getfixturevalue("s3" if cloud == "aws" else "azurite"))
    os.environ["MILKPRICE_CLOUD"] = cloud
    store.reset()
    yield new_settings(cloud=cloud)
    store.reset()


def _together(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(0..count-1)`` in threads released at the same moment."""
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        barrier.wait()
        work(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------- reading and listing


def test_read_gives_the_token_of_the_bytes_it_gives(bucket: Settings) -> None:
    token = store.write(bucket, "a/b.txt", b"one", "text/plain")
    blob = store.read(bucket, "a/b.txt")
    assert blob is not None and blob.data == b"one" and blob.token == token
    assert store.read(bucket, "a/missing") is None
    store.write(bucket, "a/b.txt", b"two!")
    again = store.read(bucket, "a/b.txt")
    assert again is not None and again.data == b"two!" and again.token != token


# names a URL must escape, in a path and in a query alike
ODD_NAMES = ("plain/a b+c#d%e?f&g=h.json", "plain/ñandú/ü.csv", "plain/~tilde/(x)*'!,;:@$.bin")


def test_plain_reads_give_what_the_sdk_gives(bucket: Settings) -> None:
    """Reads go over plain HTTP where the credentials allow (``store.plain``, every emulator
    here): the bytes and tokens are the SDK backend's, odd names and a large object too."""
    plain = store.reads(bucket).plain
    assert plain is not None
    sdk = store.backend(bucket)
    large = os.urandom(3 * 1024 * 1024 + 7)
    for name, data in [*((n, n.encode()) for n in ODD_NAMES), ("plain/large.bin", large)]:
        token = store.write(bucket, name, data)
        blob, meta = plain.read(name), sdk.metadata(name, store.TIMEOUT)
        assert blob is not None and meta is not None
        assert (blob.data, blob.token) == (data, token) and meta.token == token, name
        assert sdk.read(name) == blob
        assert plain.token(name, 1.0) == token
    assert plain.read("plain/missing") is None and plain.token("plain/missing", 1.0) is None


def test_a_refused_plain_read_hands_the_reads_to_the_sdk(
    bucket: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Azurite checks every Shared Key signature: a reader with a wrong key is refused (so the
    right one is checked), and a refusal hands the reads to the SDK, which reads the same bytes
    and tokens, from then on."""
    if bucket.cloud != "azure":
        pytest.skip("only Azurite checks signatures")
    from milkprice.store import plain

    token = store.write(bucket, "plain/x", b"x")
    variable = "AZURE_STORAGE_CONNECTION_STRING"
    wrong = os.environ[variable].replace("AccountKey=", "AccountKey=AAAA")
    right_reader = plain.reader

    def wrong_reader(cloud: str, name: str) -> store.Reader | None:
        right, os.environ[variable] = os.environ[variable], wrong
        try:
            return right_reader(cloud, name)
        finally:
            os.environ[variable] = right

    refused = wrong_reader(bucket.cloud, bucket.bucket)
    assert refused is not None
    with pytest.raises(store.Refused, match="HTTP 403"):
        refused.token("plain/x", 1.0)
    monkeypatch.setattr(plain, "reader", wrong_reader)
    store.reset()
    assert store.token(bucket, "plain/x", 1.0) == token
    assert [r.getMessage() for r in caplog.records if "SDK from now on" in r.getMessage()]
    blob = store.read(bucket, "plain/x")
    assert blob is not None and (blob.data, blob.token) == (b"x", token)
    assert len([r for r in caplog.records if "SDK from now on" in r.getMessage()]) == 1


def test_metadata_gives_size_token_and_type(bucket: Settings) -> None:
    token = store.write(bucket, "m/x.json", b'{"a": 1}', "application/json")
    meta = store.metadata(bucket, "m/x.json")
    assert meta is not None and meta.name == "m/x.json"
    assert (meta.size, meta.token, meta.content_type) == (8, token, "application/json")
    assert meta.created and meta.updated
    quick = store.metadata(bucket, "m/x.json", timeout=1.0)  # as on a request path
    assert quick is not None and quick.token == token
    assert store.metadata(bucket, "m/none", timeout=1.0) is None
    assert store.token(bucket, "m/x.json") == token


def test_list_gives_every_name_under_a_prefix_with_its_token(bucket: Settings) -> None:
    written = {
        name: store.write(bucket, name, name.encode())
        for name in ("runs/a.json", "runs/b.json", "runs/inputs/k.json", "raw/x.csv")
    }
    listed = sorted(store.list_names(bucket, "runs/"))
    assert listed == sorted((n, t) for n, t in written.items() if n.startswith("runs/"))
    assert store.list_names(bucket, "nothing/") == []


# ---------------------------------------------------------------- conditional writes


def test_create_only_conflicts_when_the_object_exists(bucket: Settings) -> None:
    token = store.create(bucket, "c", b"first")
    with pytest.raises(Conflict):
        store.create(bucket, "c", b"second")
    blob = store.read(bucket, "c")
    assert blob is not None and (blob.data, blob.token) == (b"first", token)


def test_compare_and_swap_wants_the_token_it_names(bucket: Settings) -> None:
    first = store.write(bucket, "p", b"1")
    second = store.swap(bucket, "p", b"2", "text/plain", first)
    with pytest.raises(Conflict):
        store.swap(bucket, "p", b"3", "text/plain", first)  # a token already replaced
    with pytest.raises(Conflict):
        store.swap(bucket, "p", b"3", "text/plain", None)  # None: it must not exist yet
    with pytest.raises(Conflict):
        store.swap(bucket, "q", b"3", "text/plain", second)  # no such object: no such version
    blob = store.read(bucket, "p")
    assert blob is not None and (blob.data, blob.token) == (b"2", second)
    assert store.read(bucket, "q") is None


def test_copy_keeps_the_version_asked_for_and_never_overwrites(bucket: Settings) -> None:
    first = store.write(bucket, "raw/x", b"first")
    store.copy(bucket, "raw/x", first, "archive/raw/x/1")
    second = store.write(bucket, "raw/x", b"second")
    store.copy(bucket, "raw/x", second, "archive/raw/x/1")  # the target exists: left alone
    kept = store.read(bucket, "archive/raw/x/1")
    assert kept is not None and kept.data == b"first"
    store.copy(bucket, "raw/x", second, store.archive_path("raw/x", second))
    archived = store.read(bucket, store.archive_path("raw/x", second))
    assert archived is not None and archived.data == b"second"


def test_copy_of_a_version_no_longer_there_copies_nothing(bucket: Settings) -> None:
    first = store.write(bucket, "raw/y", b"first")
    store.write(bucket, "raw/y", b"second")
    # the Cloud Storage backend reports the 404 of a gone generation as StorageUnavailable
    with pytest.raises(MilkPriceError if bucket.cloud == "gcp" else Conflict):
        store.copy(bucket, "raw/y", first, "archive/raw/y/1")
    assert store.read(bucket, "archive/raw/y/1") is None


# ---------------------------------------------------------------- races


def test_sixteen_concurrent_promoters_have_one_winner_every_time(bucket: Settings) -> None:
    for _ in range(20):
        seen = contract.read_pointer(bucket)
        token = seen[1] if seen else None
        won: list[str] = []

        def promote(n: int, token: str | None = token, won: list[str] = won) -> None:
            if contract.promote(bucket, f"v{n}", f"r{n}", token) is None:
                won.append(f"v{n}")

        _together(16, promote)
        assert len(won) == 1, won
        found = contract.read_pointer(bucket)
        assert found is not None and found[0].version == won[0]


def test_two_writers_of_identical_bytes_cannot_both_win(bucket: Settings) -> None:
    """On S3 a token is a digest of the bytes: both writers would see the same new token.

    The condition is on the token they both read, which the first write replaced, so the
    second still loses. (Bytes equal to those already there would keep the token on S3: the
    pointer's ``write_id`` is why a real pointer never is.)
    """
    same = contract.encode(contract.Pointer("v1", "r1", "2026-11-27T00:00:00Z"))
    for round_ in range(10):
        seen = store.write(bucket, store.POINTER, f"before {round_}".encode())
        won: list[int] = []

        def swap(n: int, seen: str = seen, won: list[int] = won) -> None:
            try:
                store.swap(bucket, store.POINTER, same, "application/json", seen)
                won.append(n)
            except Conflict:
                pass

        _together(2, swap)
        assert len(won) == 1, (round_, won)
        blob = store.read(bucket, store.POINTER)
        assert blob is not None and blob.data == same


def test_every_promotion_leaves_a_token_of_its_own(bucket: Settings) -> None:
    """The same version promoted twice in one second still changes the token."""
    tokens = []
    for _ in range(3):
        seen = contract.read_pointer(bucket)
        assert contract.promote(bucket, "v1", "r1", seen[1] if seen else None) is None
        tokens.append(contract.read_pointer(bucket)[1])  # type: ignore[index]
    assert len(set(tokens)) == 3


def test_uploaded_orders_two_versions_of_one_name(bucket: Settings) -> None:
    """What orders two runs' inputs: when the store took each version, not when the name
    was first created (an Azure blob keeps that across overwrites)."""
    store.write(bucket, "raw/x.csv", b"one", "text/csv")
    first = store.metadata(bucket, "raw/x.csv")
    time.sleep(1.1)  # S3's and Azure's times are to the second
    store.write(bucket, "raw/x.csv", b"two", "text/csv")
    second = store.metadata(bucket, "raw/x.csv")
    assert first is not None and second is not None and first.uploaded and second.uploaded
    assert contract.instant(second.uploaded) > contract.instant(first.uploaded)


# ---------------------------------------------------------------- claims


def _claim(run_id: str) -> contract.Claim:
    return contract.Claim(run_id, contract.now(), {"raw/precio_leche.csv": "1"})


def test_a_live_claim_is_held_and_a_silent_one_taken_over_once(bucket: Settings) -> None:
    """While its heartbeat goes on, a claim is held (a redelivery must come again); once the
    owner has been silent for the timeout, of eight takers at once exactly one gets it."""
    settings = dataclasses.replace(bucket, claim_timeout=3.0)
    owner = _claim("run-a")
    owned = contract.take_claim(settings, "k", owner)
    assert isinstance(owned, contract.Owned) and owned.earlier is None
    with contract.Heartbeat(settings, "k", owner, owned.token) as beat:
        until = time.monotonic() + 5.0  # longer than the timeout: the beats keep it
        while time.monotonic() < until:
            held = contract.take_claim(settings, "k", _claim("run-b"))
            assert isinstance(held, contract.Held), held
            assert held.holder.run_id == "run-a" and not held.finished
            assert 1 <= held.retry_after <= 3
            time.sleep(0.4)
    assert not beat.lost
    time.sleep(3.0 + 1.2)  # silent for the timeout, stamps to the second on S3 and Azure
    found: list[contract.Owned | contract.Held] = []
    _together(8, lambda n: found.append(contract.take_claim(settings, "k", _claim(f"t{n}"))))
    owners = [f for f in found if isinstance(f, contract.Owned)]
    assert len(owners) == 1, found
    assert owners[0].earlier is not None and owners[0].earlier.run_id == "run-a"
    assert all(isinstance(f, contract.Held) and not f.finished for f in found if f is not owners[0])
    late = contract.Heartbeat(settings, "k", owner, owned.token)  # the old owner, back
    assert late.beat() is False and late.lost


def test_a_finished_run_keeps_its_claim_and_a_retryable_failure_gives_it_up(
    bucket: Settings,
) -> None:
    cases: list[tuple[contract.Outcome, bool | None, bool]] = [
        ("promoted", None, False),
        ("not_promoted", None, False),
        ("failed", False, False),
        ("failed", True, True),
    ]
    for outcome, retry, taken in cases:
        key = f"{outcome}-{retry}"
        owner = _claim(f"run-{key}")
        assert isinstance(contract.take_claim(bucket, key, owner), contract.Owned)
        record = contract.RunRecord(owner.run_id, "upload", owner.started, outcome=outcome)
        if retry is not None:
            record.error = contract.RunError("x", retryable=retry)
        contract.write_run(bucket, record)
        found = contract.take_claim(bucket, key, _claim(f"later-{key}"))
        assert isinstance(found, contract.Owned) is taken, (key, found)
        if not taken:
            assert isinstance(found, contract.Held) and found.finished, (key, found)


# ---------------------------------------------------------------- the contract on each store


def test_a_manifest_round_trips(bucket: Settings) -> None:
    manifest = contract.decode(MANIFEST.read_bytes(), contract.Manifest, "manifest.json")
    for version in ("v1", "v2"):
        contract.write_manifest(bucket, msgspec.structs.replace(manifest, version=version))
    back = contract.read_manifest(bucket, "v2")
    assert back == msgspec.structs.replace(manifest, version="v2")
    assert contract.encode(back) == contract.encode(msgspec.structs.replace(manifest, version="v2"))
    assert contract.versions(bucket) == ["v1", "v2"]
    assert contract.promote(bucket, "v2", "r2", None) is None
    found = contract.serving(bucket)
    assert found is not None and found[0].version == found[1].version == "v2"


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_a_store_that_does_not_answer_is_unavailable_soon(cloud: str) -> None:
    port = processes.free_port()  # nothing listens there
    env = moto_server.env(port) if cloud == "aws" else azurite_server.env(port)
    os.environ.update(env)
    store.reset()
    settings = Settings(bucket="test-nobody", cloud=cloud)
    began = time.monotonic()
    with pytest.raises(StorageUnavailable, match="storage unavailable"):
        store.metadata(settings, "models/current.json", timeout=1.0)
    assert time.monotonic() - began < 5.0
    with pytest.raises(StorageUnavailable):
        store.read(settings, "models/current.json")
    assert time.monotonic() - began < 40.0
    began = time.monotonic()  # and the plain reader's token, on a request path
    with pytest.raises(StorageUnavailable, match=r"reading models/current\.json: storage unava"):
        store.token(settings, "models/current.json", timeout=1.0)
    assert time.monotonic() - began < 2.0
    store.reset()


def test_azure_without_an_account_says_which_variables_name_one() -> None:
    os.environ.pop("AZURE_STORAGE_CONNECTION_STRING", None)
    os.environ.pop("AZURE_STORAGE_ACCOUNT_URL", None)
    store.reset()
    with pytest.raises(
        ConfigError, match="neither AZURE_STORAGE_CONNECTION_STRING nor AZURE_STORAGE_ACCOUNT_URL"
    ):
        store.read(Settings(bucket="test-none", cloud="azure"), "x")
    store.reset()


def test_azure_with_an_account_url_uses_the_identity_it_finds() -> None:
    """A managed identity (Container Apps): the account's URL and DefaultAzureCredential; the
    client is built without a call to the network or to the identity endpoint."""
    from azure.identity import DefaultAzureCredential

    from milkprice.store.azure import AzureBackend

    os.environ.pop("AZURE_STORAGE_CONNECTION_STRING", None)
    os.environ["AZURE_STORAGE_ACCOUNT_URL"] = "https://milkprice.blob.core.windows.net"
    backend = AzureBackend("models")
    url, credential = backend.account
    assert url == "https://milkprice.blob.core.windows.net"
    assert isinstance(credential, DefaultAzureCredential)
    container = backend.container
    assert container.url == "https://milkprice.blob.core.windows.net/models"
    assert container.credential is credential


# ---------------------------------------------------------------- settings and imports


def test_the_cloud_setting() -> None:
    assert Settings.from_env({}).cloud == "gcp"
    assert Settings.from_env({"MILKPRICE_CLOUD": "aws"}).cloud == "aws"
    with pytest.raises(MilkPriceError, match="MILKPRICE_CLOUD='ibm' is not one of: gcp, aws"):
        Settings.from_env({"MILKPRICE_CLOUD": "ibm"})


def test_each_cloud_has_its_backend_built_without_network() -> None:
    from milkprice.store.azure import AzureBackend
    from milkprice.store.gcs import GcsBackend
    from milkprice.store.s3 import S3Backend

    kinds = {"gcp": GcsBackend, "aws": S3Backend, "azure": AzureBackend}
    for cloud, kind in kinds.items():
        assert isinstance(store._backend(cloud, "b-1", "p"), kind)
    with pytest.raises(ValueError, match="unknown cloud 'ibm'"):
        store._backend("ibm", "b-1", "p")
    store.reset()


def test_reading_from_cloud_storage_imports_no_other_cloud_sdk(gcs: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from milkprice import store
        from milkprice.settings import Settings

        settings = Settings.from_env()
        assert settings.cloud == "gcp", settings.cloud
        store.ensure_bucket(settings)
        store.write(settings, "x", b"1")
        assert store.read(settings, "x").data == b"1"
        other = {"boto3", "botocore", "moto", "azure"}
        print(sorted(m for m in sys.modules if m.split(".")[0] in other))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILKPRICE_")}
    env |= {"STORAGE_EMULATOR_HOST": gcs, "MILKPRICE_BUCKET": f"test-{uuid.uuid4().hex[:12]}"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_without_node_the_error_says_what_to_install(tmp_path: Path) -> None:
    os.environ["PATH"] = str(tmp_path)  # neither node nor npm here
    with pytest.raises(MilkPriceError, match=r"apt-get install nodejs npm") as caught:
        azurite_server.install(tmp_path / "node")
    assert "\n" not in caught.value.message


# each cloud's SDK, by the top modules a process using it loads (S3's through botocore alone)
SDKS = {"gcp": "google.cloud.storage", "aws": "botocore", "azure": "azure.storage.blob"}


def test_a_process_imports_only_its_own_clouds_sdk(bucket: Settings) -> None:
    """Reading (a blob, a token) loads no SDK at all: the emulators' credentials are plain
    (``store.plain``); a write loads that cloud's SDK and no other (nor boto3 over botocore):
    each is a large part of a function's cold start."""
    store.write(bucket, "sdk/probe", b"probe")
    code = textwrap.dedent(
        f"""
        import json, sys
        from milkprice import store
        from milkprice.settings import Settings
        settings = Settings(bucket={bucket.bucket!r}, cloud={bucket.cloud!r})
        def loaded():
            return sorted(m for m in (*{sorted(SDKS.values())!r}, "boto3") if m in sys.modules)
        blob = store.read(settings, "sdk/probe")
        assert blob is not None and blob.data == b"probe"
        assert store.token(settings, "sdk/probe", 1.0) == blob.token
        print(json.dumps(loaded()))
        store.write(settings, "sdk/probe-2", b"probe")
        print(json.dumps(loaded()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-2:] == ["[]", f'["{SDKS[bucket.cloud]}"]']
