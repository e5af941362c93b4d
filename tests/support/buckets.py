"""Buckets for tests: a fresh one, raw files uploaded, a model trained, versions copied."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from milkprice import contract, store
from milkprice.settings import LocalSettings, Settings

TODAY = date(2026, 11, 27)  # the day every test's training takes as today
# Small backtests of a few quick candidates keep a training to a couple of seconds: tests of
# what a run does with its model (events, claims, promotion, serving) need a model, not the
# whole catalogue. The tests of the training core and the real-data tests score every
# candidate (``candidates=""``).
QUICK_CANDIDATES = "seasonal_naive,ridge_ratio_5y,ridge_ratio_seasonal,ridge_change_legacy"
QUICK = {
    "MILKPRICE_BACKTEST_MONTHS": "6",
    "MILKPRICE_LONG_BACKTEST_MONTHS": "0",
    "MILKPRICE_CANDIDATES": QUICK_CANDIDATES,
}


def new_settings(**overrides: object) -> LocalSettings:
    """A new bucket of its own, named in MILKPRICE_BUCKET too; local settings, since a test
    plays the local stack too (its state folder, its ports)."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    overrides.setdefault("long_backtest_months", 0)  # the long view has tests of its own
    overrides.setdefault("candidates", QUICK_CANDIDATES)
    settings = LocalSettings(bucket=bucket, **overrides)  # type: ignore[arg-type]
    store.ensure_bucket(settings)
    os.environ["MILKPRICE_BUCKET"] = bucket
    return settings


def upload(settings: Settings, files: dict[str, bytes]) -> dict[str, str]:
    """Raw files written under raw/; the version token of each, by file name."""
    return {
        name: store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")
        for name, payload in files.items()
    }


def trained_bucket(
    raw: dict[str, bytes], months: int, long: int = 0, candidates: str = QUICK_CANDIDATES
) -> tuple[LocalSettings, dict[str, Any]]:
    """A new bucket holding ``raw`` and a model promoted from it (of ``candidates``; ""
    scores every one)."""
    from milkprice.train import runner

    settings = new_settings(
        backtest_months=months, long_backtest_months=long, candidates=candidates
    )
    upload(settings, raw)
    record = contract.to_builtins(runner.run(settings, "http", today=TODAY))
    assert record["outcome"] == "promoted", record
    return settings, record


def runs(settings: Settings) -> list[dict[str, Any]]:
    """Every run record of the bucket, oldest first, as plain JSON values."""
    return [contract.to_builtins(r) for r in contract.list_runs(settings)]


# ---------------------------------------------------------------- model versions


def pointer(settings: Settings) -> dict[str, Any]:
    """The pointer to the serving version (there must be one)."""
    found = contract.read_pointer(settings)
    assert found is not None
    return dict(contract.to_builtins(found[0]))


def manifest(settings: Settings, version: str | None = None) -> dict[str, Any]:
    """The manifest of ``version``, by default of the serving one."""
    version = version or pointer(settings)["version"]
    return dict(contract.to_builtins(contract.read_manifest(settings, version)))


def artifact(settings: Settings, version: str, name: str) -> bytes:
    blob = store.read(settings, store.model_path(version, name))
    assert blob is not None
    return blob.data


def clone(
    source: Settings,
    target: Settings,
    new_version: str,
    *,
    corrupt: str | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Copy the serving version of ``source`` into ``target`` under a new name."""
    version = pointer(source)["version"]
    prefix = store.model_path(version, "")
    for name, _ in store.list_names(source, prefix):
        file = name.removeprefix(prefix)
        data = artifact(source, version, file)
        if file == "manifest.json":
            doc = json.loads(data)
            doc["version"] = new_version
            if edit:
                edit(doc)
            data = json.dumps(doc).encode()
        if file == corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        store.write(target, store.model_path(new_version, file), data)
    return new_version


def promote(settings: Settings, version: str) -> None:
    """Move the pointer to ``version``, which must win."""
    seen = contract.read_pointer(settings)
    other = contract.promote(settings, version, f"run-{version}", seen[1] if seen else None)
    assert other is None, f"not promoted: {other} was"


def first_release(settings: Settings) -> str:
    """The first release's model version (``tests/data/release-0.1.0``, trained before the
    forecast path) in the bucket, under its own name and as that release wrote it, except for
    what the kept files leave out: its legacy graph is rebuilt from its own legacy.skops (the
    manifest names the rebuilt graph's sha256), and it has no backtest chart or table."""
    from milkprice.train import artifacts
    from tests.support.paths import RELEASE

    doc = json.loads((RELEASE / "manifest.json").read_text())
    version = doc["version"]
    files = {p.name: p.read_bytes() for p in RELEASE.iterdir() if p.name in doc["files"]}
    legacy = doc["models"]["legacy"]
    pipeline = artifacts.from_skops(files[legacy["skops"]])
    files[legacy["onnx"]] = artifacts.to_onnx(pipeline, len(legacy["features"]))
    legacy["sha256"][legacy["onnx"]] = artifacts.sha256(files[legacy["onnx"]])
    doc["files"] = {name: artifacts.sha256(data) for name, data in files.items()}
    doc["backtest"].update(chart="", table="")
    files["manifest.json"] = json.dumps(doc).encode()
    for name, data in files.items():
        store.write(settings, store.model_path(version, name), data)
    return version
