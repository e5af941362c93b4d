"""Prometheus metrics: each function's registry, rendered for ``GET /metrics``.

Each function is one process (one gunicorn worker with threads: the images and the local
stack set ``WORKERS=1``), so a registry's counts are the function's own and no multiprocess
mode is needed; with more workers each would answer its own counts. Names follow Prometheus'
conventions: base units (``_seconds``, ``_bytes``), counters end in ``_total``, info metrics
in ``_info``. The process's own (CPU, memory, open files, garbage collections) come with it.
"""

from __future__ import annotations

import functools

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from milkprice import settings
from milkprice.errors import NotFound

NAMESPACE = "milkprice"
# what a request to a function takes: from a tenth of a millisecond (a cached answer) up
LATENCY_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# what a training stage takes: from a tenth of a second to half an hour
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@functools.cache
def registry() -> CollectorRegistry:
    """The process's registry, built on first use: the project's metrics and the process's."""
    # no *_created series: in the text format each is one more gauge per labelled series, and
    # Prometheus has the counters' resets from their values
    disable_created_metrics()
    found = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        found.register(collector)
    return found


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The registry in the text format a scraper's ``Accept`` asks for (Prometheus' text
    format by default, OpenMetrics when asked) and its content type."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry()), content_type


def on() -> bool:
    """Whether the function counts its work and answers ``/metrics`` (``MILKPRICE_METRICS``)."""
    return settings.cached().metrics == "on"


def scrape(accept: str | None) -> tuple[bytes, str]:
    """A scrape's answer: :func:`exposition`, or 404 when metrics are off."""
    if not on():
        raise NotFound("metrics are off here (MILKPRICE_METRICS=off)")
    return exposition(accept)
