"""The predict function's metrics (``GET /metrics``): its requests, the model it serves and how
the model got there. Built once, on first use, in the process's registry
(:func:`milkprice.metrics.registry`); updated by the router, the model cache and the scorers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, Info

from milkprice.metrics import LATENCY_BUCKETS, NAMESPACE, on, registry

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNROUTED = "unrouted"  # a path no route matches: one label, however many such paths come


@dataclass(frozen=True)
class PredictMetrics:
    requests: Counter
    duration: Histogram
    rows: Counter
    model: Info
    reloads: Counter
    pointer_checks: Counter
    storage_errors: Counter
    version_loads: Counter
    versions_kept: Gauge
    # the labelled children each request updates, looked up once per label set: labels()
    # validates and locks on every call, a few microseconds of a sub-millisecond answer
    answered: dict[tuple[str, str, str], tuple[Any, Any]] = field(default_factory=dict)
    scored_by: dict[str, Any] = field(default_factory=dict)


@functools.cache
def get() -> PredictMetrics:
    """The metrics, registered once per process."""
    r, ns = registry(), NAMESPACE
    return PredictMetrics(
        requests=Counter(
            "predict_requests",
            "Requests answered, by route (its template), method and status",
            ["route", "method", "status"],
            namespace=ns,
            registry=r,
        ),
        duration=Histogram(
            "predict_request_duration_seconds",
            "Seconds from the request's arrival in the function to its answer, by route",
            ["route"],
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        ),
        rows=Counter(
            "predict_rows_scored", "Rows priced, by model", ["model"], namespace=ns, registry=r
        ),
        model=Info(
            "predict_model", "The model version served and its models", namespace=ns, registry=r
        ),
        reloads=Counter(
            "predict_reloads",
            "Loads of the version the pointer names, by outcome (loaded or failed)",
            ["outcome"],
            namespace=ns,
            registry=r,
        ),
        pointer_checks=Counter(
            "predict_pointer_checks",
            "Checks of the pointer, by outcome (unchanged, moved, missing or failed)",
            ["outcome"],
            namespace=ns,
            registry=r,
        ),
        storage_errors=Counter(
            "predict_storage_errors",
            "Calls to the bucket that failed, by what was asked",
            ["operation"],
            namespace=ns,
            registry=r,
        ),
        version_loads=Counter(
            "predict_version_loads",
            "Loads of versions named by a V2 route (not the pointer's), by outcome",
            ["outcome"],
            namespace=ns,
            registry=r,
        ),
        versions_kept=Gauge(
            "predict_versions_kept",
            "Versions named by V2 routes held in memory now",
            namespace=ns,
            registry=r,
        ),
    )


def observe(route: str | None, method: str, status: int, seconds: float) -> None:
    """One answered request: ``route`` is the matched template (None: no route matched)."""
    if not on():
        return
    m = get()
    key = (route or UNROUTED, method if method in METHODS else "other", str(status))
    found = m.answered.get(key)
    if found is None:
        found = m.answered[key] = (m.requests.labels(*key), m.duration.labels(key[0]))
    found[0].inc()
    found[1].observe(seconds)


def scored(role: str, rows: int) -> None:
    """Rows priced by the ``role`` model (counted only when metrics are on)."""
    if not on():
        return
    m = get()
    found = m.scored_by.get(role)
    if found is None:
        found = m.scored_by[role] = m.rows.labels(role)
    found.inc(rows)
