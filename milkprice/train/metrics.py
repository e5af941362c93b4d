"""The train function's metrics (``GET /metrics``): runs by trigger and outcome, each stage's
seconds, the last promotion, and events by platform shape and answer. Built once, on first
use, in the process's registry (:func:`milkprice.metrics.registry`)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from milkprice.metrics import NAMESPACE, STAGE_BUCKETS, registry


@dataclass(frozen=True)
class TrainMetrics:
    runs: Counter
    stages: Histogram
    promoted: Gauge
    since_promoted: Gauge
    events: Counter


class _Promotion:
    """When this process last saw a version promoted (0: not yet)."""

    at = 0.0

    @classmethod
    def age(cls) -> float:
        return time.time() - cls.at if cls.at else float("nan")


@functools.cache
def get() -> TrainMetrics:
    """The metrics, registered once per process."""
    r, ns = registry(), NAMESPACE
    since = Gauge(
        "train_last_promotion_age_seconds",
        "Seconds since this function last promoted a version (NaN: not since it started)",
        namespace=ns,
        registry=r,
    )
    since.set_function(_Promotion.age)
    return TrainMetrics(
        runs=Counter(
            "train_runs",
            "Training runs finished, by trigger and outcome",
            ["trigger", "outcome"],
            namespace=ns,
            registry=r,
        ),
        stages=Histogram(
            "train_stage_duration_seconds",
            "Seconds each stage of a run took, by stage",
            ["stage"],
            namespace=ns,
            registry=r,
            buckets=STAGE_BUCKETS,
        ),
        promoted=Gauge(
            "train_last_promotion_timestamp_seconds",
            "When this function last promoted a version, in seconds since the epoch",
            namespace=ns,
            registry=r,
        ),
        since_promoted=since,
        events=Counter(
            "train_events",
            "Events received, by the platform's shape and the status answered",
            ["shape", "status"],
            namespace=ns,
            registry=r,
        ),
    )


def promoted(at: float | None = None) -> None:
    """A version was promoted (at ``at``, seconds since the epoch; default now)."""
    _Promotion.at = time.time() if at is None else at
    get().promoted.set(_Promotion.at)
