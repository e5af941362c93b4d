"""The train function's metrics (``GET /metrics``): runs by trigger and outcome, each stage's
seconds, the last promotion, and events by platform shape and answer. Built once, on first
use, in the process's registry (:func:`milkprice.metrics.registry`)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from milkprice.metrics import NAMESPACE, STAGE_BUCKETS, registry
from milkprice.train import triggers


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


def shape(found: triggers.Trigger | None) -> str:
    """An event's platform shape, as the events metric labels it: the platform that sent an
    upload or a schedule (eventarc, s3, eventbridge, eventgrid, scheduler, knative-ping), a
    handshake, an ignored event, or unknown (a body no shape matched)."""
    if isinstance(found, triggers.Uploads):
        return found.items[0].source if found.items else "unknown"
    if isinstance(found, triggers.Upload | triggers.Schedule):
        return found.source
    if isinstance(found, triggers.Validation):
        return "handshake"
    return "ignored" if isinstance(found, triggers.Ignored) else "unknown"


def event(found: triggers.Trigger | None, status: int) -> None:
    """One event answered with ``status`` (``found`` None: its body was refused)."""
    get().events.labels(shape(found), str(status)).inc()
