"""Fixtures: the real fake-gcs-server for the session, a fresh bucket per test, a clean env."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from milkprice import contract, store
from milkprice.local import emulator, sample
from milkprice.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "milk-price-chile"
TODAY = date(2026, 11, 27)
# Small backtests keep function tests quick; the real-data tests use the full 24 months.
QUICK = {"MILKPRICE_BACKTEST_MONTHS": "6", "MILKPRICE_LONG_BACKTEST_MONTHS": "0"}


@pytest.fixture(autouse=True)
def _isolated_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real fake-gcs-server on a free port; STORAGE_EMULATOR_HOST points at it."""
    port = emulator.free_port()
    proc = emulator.start(tmp_path_factory.mktemp("gcs"), port)
    host = emulator.url("127.0.0.1", port)
    os.environ["STORAGE_EMULATOR_HOST"] = host
    yield host
    emulator.stop(proc)


def new_settings(**overrides: object) -> Settings:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    overrides.setdefault("long_backtest_months", 0)  # the long view has tests of its own
    settings = Settings(bucket=bucket, **overrides)  # type: ignore[arg-type]
    store.ensure_bucket(settings)
    os.environ["MILKPRICE_BUCKET"] = bucket
    return settings


@pytest.fixture
def settings(gcs: str) -> Settings:
    """A bucket of its own for each test, named in MILKPRICE_BUCKET too."""
    os.environ.update(QUICK)
    return new_settings(backtest_months=6)


@pytest.fixture(scope="session")
def sample_raw() -> dict[str, bytes]:
    return sample.sample_files()


@pytest.fixture(scope="session")
def real_raw() -> dict[str, bytes]:
    if not SHARED.is_dir():
        pytest.skip(f"the real data is not at {SHARED}")
    return {name: (SHARED / name).read_bytes() for name in store.RAW_FILES}


def upload(settings: Settings, files: dict[str, bytes]) -> dict[str, str]:
    return {
        name: store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")
        for name, payload in files.items()
    }


def trained_bucket(
    raw: dict[str, bytes], months: int, long: int = 0
) -> tuple[Settings, dict[str, Any]]:
    """A new bucket holding ``raw`` and a model promoted from it."""
    from milkprice.train import runner

    settings = new_settings(backtest_months=months, long_backtest_months=long)
    upload(settings, raw)
    record = contract.to_builtins(runner.run(settings, "http", today=TODAY))
    assert record["outcome"] == "promoted", record
    return settings, record


@pytest.fixture(scope="session")
def trained_sample(gcs: str, sample_raw: dict[str, bytes]) -> tuple[Settings, dict[str, object]]:
    """A bucket holding a model promoted from the sample data (shared: do not change it)."""
    return trained_bucket(sample_raw, 6)


@pytest.fixture(scope="session")
def trained_real(gcs: str, real_raw: dict[str, bytes]) -> tuple[Settings, dict[str, object]]:
    """A bucket holding a model promoted from the real data: the full 24 and 60-month views."""
    return trained_bucket(real_raw, 24, 60)


@pytest.fixture
def use_bucket() -> Callable[[Settings], None]:
    """Point the MILKPRICE_* environment at a session bucket for this test only."""

    def use(settings: Settings) -> None:
        os.environ["MILKPRICE_BUCKET"] = settings.bucket
        os.environ["MILKPRICE_BACKTEST_MONTHS"] = str(settings.backtest_months)

    return use
