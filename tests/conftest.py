"""Fixtures: the real fake-gcs-server for the session, a fresh bucket per test, a clean env.

Every test gets the marker of the folder it is in: ``unit``, ``function`` or ``integration``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from milkprice import store
from milkprice.local import processes, sample
from milkprice.local.object_stores import fake_gcs
from milkprice.settings import LocalSettings, Settings
from tests.support.buckets import QUICK, new_settings, trained_bucket
from tests.support.paths import SHARED
from tests.support.platform_events import left_out

KINDS = ("unit", "function", "integration")
LONG = ("test_real_data.py",)  # trains the real data with every candidate: over a minute
HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/unit, tests/function, tests/integration."""
    rank = {}
    for item in items:
        path = item.path.resolve()
        kind = path.relative_to(HERE).parts[0] if path.is_relative_to(HERE) else ""
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        rank[item.nodeid] = (item.path.name not in LONG, -KINDS.index(kind) if kind in KINDS else 0)
    # The longest first: parallel workers take whole files in this order, and short files
    # last fill the gaps instead of one long file running alone at the end.
    items.sort(key=lambda item: rank[item.nodeid])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say what a run leaves out by marker, and what runs it: nothing is left out unsaid."""
    chosen = str(config.option.markexpr or "")
    for marker, target in (("long", "make test-long"), ("observe", "make test-observe")):
        if f"not {marker}" in chosen:
            terminalreporter.write_line(
                f"left out here, the {marker!r} tests (-m 'not {marker}'): {target} runs them, "
                "and CI runs every one"
            )


@pytest.fixture(autouse=True)
def _isolated_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs read, claim, archive and record as usual, and leave the training out."""
    from milkprice.train import runner

    monkeypatch.setattr(runner, "_train_and_write", left_out)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real fake-gcs-server on a free port; STORAGE_EMULATOR_HOST points at it."""
    port = processes.free_port()
    proc = fake_gcs.start(tmp_path_factory.mktemp("gcs"), port)
    host = fake_gcs.url("127.0.0.1", port)
    os.environ["STORAGE_EMULATOR_HOST"] = host
    yield host
    fake_gcs.stop(proc)


@pytest.fixture
def settings(gcs: str) -> LocalSettings:
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


@pytest.fixture(scope="session")
def trained_sample(gcs: str, sample_raw: dict[str, bytes]) -> tuple[Settings, dict[str, object]]:
    """A bucket holding a model promoted from the sample data (shared: do not change it)."""
    return trained_bucket(sample_raw, 6)


@pytest.fixture(scope="session")
def trained_real(gcs: str, real_raw: dict[str, bytes]) -> tuple[Settings, dict[str, object]]:
    """A bucket holding a model promoted from the real data, of the quick candidates (shared:
    do not change it); ``tests/function/test_real_data.py`` trains the full views itself."""
    return trained_bucket(real_raw, 6)


@pytest.fixture
def use_bucket() -> Callable[[Settings], None]:
    """Point the MILKPRICE_* environment at a session bucket for this test only."""

    def use(settings: Settings) -> None:
        os.environ["MILKPRICE_BUCKET"] = settings.bucket
        os.environ["MILKPRICE_BACKTEST_MONTHS"] = str(settings.backtest_months)

    return use
