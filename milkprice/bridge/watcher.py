"""The upload bridge's watcher: lists ``raw/`` by object version and, for every new one, POSTs
the event its cloud's event service would (``shapes``): Eventarc's binary-mode CloudEvent for
Cloud Storage, Event Grid's ``BlobCreated`` for Blob Storage, an S3 event notification for an
S3-compatible store. (S3 itself sends its own notifications: locally, ``milkprice.local.s3_queue``.)

Delivery is at least once: a delivery that gets no answer or a 5xx is sent again after a
backoff that grows up to a cap, as often as it takes, while other versions are delivered
meanwhile; the train function is idempotent on the set of raw versions.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milkprice import http_client as http
from milkprice import store
from milkprice.bridge import shapes
from milkprice.errors import MilkPriceError
from milkprice.settings import LocalSettings

log = logging.getLogger("milkprice.bridge")


def sink(settings: LocalSettings, environ: Mapping[str, str]) -> str:
    """Where events go: Knative's injected sink first, then the settings."""
    return environ.get("K_SINK") or settings.event_endpoint()


def post(url: str, body: bytes, headers: dict[str, str], deadline: float) -> tuple[int, bytes]:
    """POST and return (status, body); status 0 when the call did not get an answer."""
    answer = http.request(url, body, headers, deadline, method="POST")
    return answer.status, answer.body or answer.error.encode()


def outcome(answer: bytes) -> str:
    try:
        doc = json.loads(answer)
    except ValueError:
        return answer[:200].decode(errors="replace")
    return f"{doc.get('outcome')}: {doc.get('reason') or doc.get('error')}"


@dataclass
class _Pending:
    """One version's event, kept as first sent while it waits to be sent again."""

    name: str
    generation: str
    headers: dict[str, str]
    body: bytes
    failures: int = 0
    due: float = 0.0


@dataclass
class Bridge:
    """Turns new object versions under ``raw/`` into their cloud's events, POSTed to ``url``."""

    settings: LocalSettings
    url: str
    state_file: Path | None = None
    quiet: float = 2.0  # wait this long after the last change before delivering
    poll: float = 1.0
    deadline: float = 900.0  # seconds one delivery may take (a training)
    # a delivery not answered for good (a 503 while the run of another file of the same
    # upload trains on all three, say) is sent again after this long, doubled each time it
    # fails again, up to the cap: as often as it takes, with no restart needed
    min_retry: float = 1.0
    max_retry: float = 30.0
    # after a failed look: wait this long, doubled while failures go on, up to the cap
    backoff: float = 5.0
    max_backoff: float = 60.0
    shape: shapes.Shape | None = None  # the event to send; default: the cloud's own
    seen: dict[str, str] = field(default_factory=dict)  # name -> token delivered
    delivered: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.state_file and self.state_file.exists():
            self.seen = {k: str(v) for k, v in json.loads(self.state_file.read_text()).items()}
        # what the state file holds: only deliveries that were answered for good, so one cut
        # short by a stop (or still waiting for its retry) is delivered again by the next bridge
        self._done = dict(self.seen)
        self._shape = self.shape or shapes.SHAPES[self.settings.cloud]
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="deliver")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[Future[int]] = []
        self._later: dict[str, _Pending] = {}  # name -> its delivery waiting for its retry

    def drain(self, timeout: float = 60.0) -> None:
        """Wait for the deliveries started so far."""
        wait(self._futures, timeout=timeout)
        self._futures = [f for f in self._futures if not f.done()]

    def changes(self) -> list[tuple[str, str]]:
        """New (name, token) pairs under raw/ since the last look."""
        live = store.list_names(self.settings, store.RAW_PREFIX)
        return [(n, g) for n, g in live if self.seen.get(n) != g]

    def deliver(self, name: str, generation: str) -> int:
        """The first delivery of one version; if it is not answered for good, it waits for
        its retry (``step`` sends it when due) and this returns at once."""
        meta = store.metadata(self.settings, name)
        if meta is None or meta.token != generation:
            return 204  # replaced or deleted meanwhile: the newer generation has its own event
        headers, body = self._shape(self.settings, name, meta)
        headers.update(shapes.authorization(self.settings))
        return self._send(_Pending(name, generation, headers, body))

    def _send(self, pending: _Pending) -> int:
        """One attempt: saved when answered for good, else back in line for a later retry
        (the same event: a retry is a redelivery, not a new upload)."""
        name, generation = pending.name, pending.generation
        status, answer = post(self.url, pending.body, pending.headers, self.deadline)
        with self._lock:
            self.delivered.append({"name": name, "generation": generation, "status": status})
            if 0 < status < 500:
                self._done[name] = generation
                self._save()
            elif self.seen.get(name) == generation:  # not superseded by a newer version
                delay = min(self.min_retry * 2**pending.failures, self.max_retry)
                pending.failures += 1
                pending.due = time.monotonic() + delay
                self._later[name] = pending
                log.warning(
                    "event for %s#%s answered %s; again in %.1f s (attempt %d)",
                    name,
                    generation,
                    status or answer.decode(errors="replace") or "nothing",
                    delay,
                    pending.failures + 1,
                )
                return status
        level = logging.INFO if 200 <= status < 300 else logging.ERROR
        log.log(level, "delivered %s#%s: %s %s", name, generation, status, outcome(answer))
        return status

    def retry_due(self) -> list[tuple[str, str]]:
        """Send again the deliveries whose backoff is over, each on a worker of its own, so
        that one sink failing a version holds up no other version."""
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._later.values() if p.due <= now]
            for p in due:
                del self._later[p.name]
        for p in due:
            self._submit(self._send, p)
        return [(p.name, p.generation) for p in due]

    def step(self) -> list[tuple[str, str]]:
        """One look: retries whose time has come, then, once changes have settled for
        ``quiet`` seconds, the new versions."""
        self.retry_due()
        pending = self.changes()
        if not pending:
            return []
        deadline = time.monotonic() + self.quiet
        while time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(min(self.poll, self.quiet))
            again = self.changes()
            if again != pending:
                pending, deadline = again, time.monotonic() + self.quiet
        for name, gen in pending:
            with self._lock:
                self.seen[name] = gen
                self._later.pop(name, None)  # a newer version replaces one waiting to retry
            self._submit(self.deliver, name, gen)
        return pending

    def _submit(self, call: Callable[..., int], *args: Any) -> None:
        future = self._pool.submit(call, *args)
        future.add_done_callback(_report_failure)
        self._futures.append(future)

    def _save(self) -> None:
        if self.state_file:
            # the folder may not exist yet: nothing else needs it before the first delivery
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self._done))

    def run(self) -> None:
        log.info(
            "bridge: watching %s/%s (%s) -> %s",
            self.settings.bucket,
            store.RAW_PREFIX,
            self.settings.cloud,
            self.url,
        )
        delay = self.backoff
        while not self._stop.is_set():
            if self._step_survived():
                delay = self.backoff
            else:  # a thread that dies here stops every later upload from training: go on
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)
            self._stop.wait(self.poll)

    def _step_survived(self) -> bool:
        """One step; False, logged, when it raised."""
        try:
            self.step()
        except MilkPriceError as exc:  # the bucket not answering: expected, its message says all
            log.warning("bridge: %s", exc.message)
            return False
        except Exception:
            log.exception("bridge: a look at raw/ failed; trying again")
            return False
        return True

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="bridge", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _report_failure(future: Future[int]) -> None:
    """A delivery that raised would otherwise vanish with its future, unseen."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.error("bridge: a delivery failed", exc_info=exc)
