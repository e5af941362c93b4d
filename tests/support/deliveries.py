"""Upload events delivered to a train function process, and the runs they start, watched in
the bucket as a person would: by their run records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from milkprice import contract, store
from milkprice import http_client as http
from milkprice.bridge import shapes as event_shapes
from milkprice.bridge.shapes import Delivery
from milkprice.settings import LocalSettings, Settings


def upload_event(settings: LocalSettings, name: str) -> Delivery:
    """The event the bucket's cloud sends for the live version of ``name``; sent again as it
    is, it is a redelivery (the same id)."""
    meta = store.metadata(settings, name)
    assert meta is not None, name
    return event_shapes.SHAPES[settings.cloud](settings, name, meta)


def deliver(url: str, event: Delivery, timeout: float = 600) -> http.Answer:
    headers, body = event
    return http.request(url + "events", body, dict(headers), timeout, method="POST")


def deliver_in_background(url: str, event: Delivery) -> tuple[threading.Thread, list[http.Answer]]:
    """Deliver on a thread of its own (a training takes a while); the answer lands in the list."""
    answers: list[http.Answer] = []
    thread = threading.Thread(target=lambda: answers.append(deliver(url, event)), daemon=True)
    thread.start()
    return thread, answers


def new_run(
    settings: Settings,
    before: set[str],
    ready: Callable[[contract.RunRecord], bool],
    timeout: float = 300,
) -> contract.RunRecord:
    """The first run not in ``before`` whose record satisfies ``ready``. A run's record is in
    the bucket from the stage after its inputs are read and claimed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_id in set(contract.run_ids(settings)) - before:
            record = contract.read_run(settings, run_id)
            if record is not None and ready(record):
                return record
        time.sleep(0.05)
    raise AssertionError(f"no new run got there within {timeout:.0f} s")
