"""Fixtures of the predict function's tests: a fresh process, a trained bucket to read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from milkprice.predict import cache
from milkprice.settings import Settings
from tests.support.buckets import manifest
from tests.support.rows import Sample, next_row


@pytest.fixture
def fresh_process() -> Iterator[None]:
    """Each test starts as a new process would: no cache, settings read again."""
    cache.reset()
    yield
    cache.reset()


@pytest.fixture
def on_sample(
    trained_sample: tuple[Settings, dict[str, Any]], use_bucket: Callable[[Settings], None]
) -> tuple[Settings, dict[str, Any]]:
    """The function reads the sample-trained bucket: its settings and serving manifest."""
    settings, _ = trained_sample
    use_bucket(settings)
    return settings, manifest(settings)


@pytest.fixture
def on_real(
    trained_real: tuple[Settings, dict[str, Any]], use_bucket: Callable[[Settings], None]
) -> tuple[Settings, dict[str, Any]]:
    """The function reads the bucket trained on the real data: settings and serving manifest."""
    settings, _ = trained_real
    use_bucket(settings)
    return settings, manifest(settings)


@pytest.fixture
def sample(on_sample: tuple[Settings, dict[str, Any]]) -> Sample:
    """The sample-trained bucket's feature names and next month's row."""
    _, doc = on_sample
    return Sample(
        doc["models"]["forecast"]["features"], doc["models"]["legacy"]["features"], next_row(doc)
    )
