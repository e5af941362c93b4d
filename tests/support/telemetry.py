"""What the tests read of the functions' telemetry: a scrape parsed with the client's own
parser, and a real OTLP receiver the functions export their spans to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client.parser import text_string_to_metric_families

from milkprice import tracing
from milkprice.local.trace_receiver import Receiver, receiver

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


@contextmanager
def exporting() -> Iterator[Receiver]:
    """Spans of this process exported to a fresh receiver, as the OTEL_* variables say; the
    process's tracer providers are made anew for it, and shut down after."""
    with receiver() as (url, kept):
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = url
        os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "50"  # batches sent at once, not every 5 s
        tracing.reset()
        try:
            yield kept
        finally:
            tracing.reset()
            os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
