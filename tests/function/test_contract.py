"""The bucket contract and the store interface, against the real emulator.

The release-0.1.0 files were written by the first release's training (sample data); they
must keep loading, as the bucket of a running system holds them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import msgspec
import pytest

from milkprice import contract, store
from milkprice.errors import Conflict, ContractError, LoadError, NotFound, NotReady
from milkprice.settings import Settings
from tests.support.paths import RELEASE


def _load(name: str) -> bytes:
    return (RELEASE / name).read_bytes()


# ---------------------------------------------------------------- decoding


def test_a_manifest_of_the_first_release_loads() -> None:
    doc = json.loads(_load("manifest.json"))
    manifest = contract.decode(_load("manifest.json"), contract.Manifest, "manifest.json")
    assert manifest.version == doc["version"] and manifest.schema == contract.SCHEMA
    forecast = manifest.models["forecast"]
    assert forecast.features == doc["models"]["forecast"]["features"]
    assert forecast.interval is not None and forecast.interval.level == 0.8
    assert manifest.next.features == doc["next"]["features"]
    # its raw objects were named by generation; the contract calls them tokens now
    for path, entry in manifest.inputs.items():
        assert entry.token == str(doc["inputs"][path]["generation"]) and entry.archive
    # and everything it held survives a round trip (the token added, nothing lost)
    again = json.loads(contract.encode(manifest))
    assert again["models"] == doc["models"] and again["candidates"] == doc["candidates"]


def test_a_pointer_and_a_run_record_of_the_first_release_load() -> None:
    pointer = contract.decode(_load("current.json"), contract.Pointer, "models/current.json")
    assert pointer.version == json.loads(_load("current.json"))["version"]
    record = contract.decode(_load("run.json"), contract.RunRecord, "runs/x.json")
    assert record.outcome == "promoted" and record.models["forecast"].rmse > 0
    assert record.timings["backtest"] > 0


def test_an_old_failed_record_says_whether_a_retry_can_help() -> None:
    """The first release wrote no ``retryable``: data faults were final, the rest retried."""
    data = contract.decode(b'{"error": "bad", "data": true}', contract.RunError, "x")
    other = contract.decode(b'{"error": "storage away"}', contract.RunError, "x")
    assert data.retryable is False and other.retryable is True


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d.pop("models"), ["manifest.json", "Manifest", "models"]),
        (lambda d: d["models"]["forecast"].update(features="x"), ["features", "array"]),
        (lambda d: d["next"].update(month=3), ["next.month", "str"]),
    ],
)
def test_a_manifest_that_does_not_match_is_a_clear_error(edit: object, words: list[str]) -> None:
    doc = json.loads(_load("manifest.json"))
    edit(doc)  # type: ignore[operator]
    with pytest.raises(ContractError) as caught:
        contract.decode(json.dumps(doc).encode(), contract.Manifest, "models/v/manifest.json")
    for word in words:
        assert word in caught.value.message, caught.value.message


def test_not_json_is_a_clear_error() -> None:
    with pytest.raises(ContractError, match=r"models/current\.json is not valid JSON"):
        contract.decode(b"{not json", contract.Pointer, "models/current.json")


def test_every_pointer_write_has_bytes_of_its_own() -> None:
    """A store whose token is a digest of the bytes must not see two writes as one."""
    first = contract.Pointer("v1", "r1", "2026-01-01T00:00:00Z", write_id="a")
    second = msgspec.structs.replace(first, write_id="b")
    assert contract.encode(first) != contract.encode(second)


# ---------------------------------------------------------------- operations on a bucket


def test_promote_read_and_roll_back(settings: Settings) -> None:
    assert contract.read_pointer(settings) is None and contract.serving(settings) is None
    manifest = contract.decode(_load("manifest.json"), contract.Manifest, "manifest.json")
    for version in ("v1", "v2"):
        contract.write_manifest(settings, msgspec.structs.replace(manifest, version=version))
    assert contract.versions(settings) == ["v1", "v2"]
    assert contract.promote(settings, "v1", "r1", None) is None
    _, token = contract.read_pointer(settings)  # type: ignore[misc]
    assert contract.promote(settings, "v2", "r2", token) is None
    assert contract.promote(settings, "v1", "r3", token) == "v2"  # a stale token loses
    found = contract.serving(settings)
    assert found is not None and found[0].version == found[1].version == "v2"
    assert contract.rollback(settings, "v1").version == "v1"
    with pytest.raises(NotFound, match="no model version v9"):
        contract.rollback(settings, "v9")


def test_the_served_artifact_is_the_pointed_version_s_file(settings: Settings) -> None:
    with pytest.raises(NotReady, match="no model promoted"):
        contract.served_artifact(settings, "forecast", "onnx")
    manifest = contract.decode(_load("manifest.json"), contract.Manifest, "manifest.json")
    entry = manifest.models["forecast"]
    contract.write_manifest(settings, manifest)
    contract.promote(settings, manifest.version, "r1", None)
    with pytest.raises(LoadError, match=f"names {entry.skops}, which is not in the bucket"):
        contract.served_artifact(settings, "forecast", "skops")
    contract.write_artifacts(settings, manifest.version, {entry.skops: b"kept"})
    found = contract.served_artifact(settings, "forecast", "skops")
    assert found == (manifest, entry, b"kept")


def test_runs_are_listed_oldest_first(settings: Settings) -> None:
    for run_id in ("20260102T000000Z-b", "20260101T000000Z-a", "20260103T000000Z-c"):
        contract.write_run(settings, contract.RunRecord(run_id, "http", contract.now()))
    store.create(settings, contract.claim_path("k"), b"{}")  # claims are not runs
    assert [r.run_id for r in contract.list_runs(settings)] == [
        "20260101T000000Z-a",
        "20260102T000000Z-b",
        "20260103T000000Z-c",
    ]
    assert [r.run_id for r in contract.list_runs(settings, last=1)] == ["20260103T000000Z-c"]


def test_sixteen_concurrent_promoters_have_one_winner(settings: Settings) -> None:
    for _ in range(5):
        seen = contract.read_pointer(settings)
        token = seen[1] if seen else None
        won: list[str] = []
        barrier = threading.Barrier(16)

        def promote(
            n: int, token: str | None = token, won: list[str] = won, barrier: object = barrier
        ) -> None:
            barrier.wait()  # type: ignore[attr-defined]
            if contract.promote(settings, f"v{n}", f"r{n}", token) is None:
                won.append(f"v{n}")

        threads = [threading.Thread(target=promote, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, won
        assert contract.read_pointer(settings)[0].version == won[0]  # type: ignore[index]


# ---------------------------------------------------------------- the store interface


def test_read_gives_the_token_of_the_bytes_it_gives(settings: Settings) -> None:
    token = store.write(settings, "a/b.txt", b"one")
    blob = store.read(settings, "a/b.txt")
    assert blob is not None and blob.data == b"one" and blob.token == token
    meta = store.metadata(settings, "a/b.txt")
    assert meta is not None and meta.size == 3 and meta.token == token
    assert store.read(settings, "a/missing") is None and store.metadata(settings, "a/x") is None
    assert store.list_names(settings, "a/") == [("a/b.txt", token)]


def test_create_only_and_compare_and_swap(settings: Settings) -> None:
    first = store.create(settings, "p", b"1")
    with pytest.raises(Conflict):
        store.create(settings, "p", b"2")
    second = store.swap(settings, "p", b"2", "text/plain", first)
    with pytest.raises(Conflict):
        store.swap(settings, "p", b"3", "text/plain", first)  # a token already replaced
    with pytest.raises(Conflict):
        store.swap(settings, "p", b"3", "text/plain", None)  # None: must not exist
    assert store.read(settings, "p").data == b"2"  # type: ignore[union-attr]
    assert store.token(settings, "p") == second


def test_copy_keeps_the_version_asked_for_and_never_overwrites(settings: Settings) -> None:
    token = store.write(settings, "raw/x", b"first")
    store.copy(settings, "raw/x", token, "archive/raw/x/1")
    store.write(settings, "raw/x", b"second")
    store.copy(settings, "raw/x", store.token(settings, "raw/x") or "", "archive/raw/x/1")
    assert store.read(settings, "archive/raw/x/1").data == b"first"  # type: ignore[union-attr]


def test_the_release_files_are_small(tmp_path: Path) -> None:
    """Kept in the repository as test data: they must stay small."""
    assert sum(p.stat().st_size for p in RELEASE.iterdir()) < 200_000
