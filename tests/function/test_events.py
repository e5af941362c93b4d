"""The local Cloud Scheduler and Eventarc stand-ins, against a real HTTP receiver."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from milkprice import store
from milkprice.bridge import watcher
from milkprice.local import scheduler
from milkprice.settings import LocalSettings
from tests.support.buckets import upload


class Receiver:
    """A real HTTP server that records what it gets and answers as told."""

    def __init__(self, answer: Callable[[int], int], delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.active += 1
                    receiver.most_active = max(receiver.most_active, receiver.active)
                    n = len(receiver.requests)
                    receiver.requests.append(
                        {"headers": dict(self.headers), "body": body, "at": time.monotonic()}
                    )
                time.sleep(delay)
                status = answer(n)
                with receiver.lock:
                    receiver.active -= 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(
                    json.dumps({"outcome": "promoted" if status < 300 else "failed"}).encode()
                )

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(answer: Callable[[int], int] = lambda n: 200, delay: float = 0.0) -> Receiver:
        made.append(Receiver(answer, delay))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_bridge_posts_eventarc_cloudevents(
    settings: LocalSettings, sample_raw: dict[str, bytes], receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    bridge = watcher.Bridge(settings, receiver.url, quiet=0.3, poll=0.1)
    generations = upload(settings, sample_raw)
    store.write(settings, "models/unrelated.json", b"{}")
    assert sorted(n for n, _ in bridge.step()) == [f"raw/{n}" for n in sorted(sample_raw)]
    bridge.drain()
    assert len(receiver.requests) == 3
    for request in receiver.requests:
        h = {k.lower(): v for k, v in request["headers"].items()}
        data = json.loads(request["body"])
        assert h["ce-type"] == "google.cloud.storage.object.v1.finalized"
        assert h["ce-source"] == f"//storage.googleapis.com/projects/_/buckets/{settings.bucket}"
        assert h["ce-subject"] == f"objects/{data['name']}"
        assert h["ce-specversion"] == "1.0" and h["ce-id"] and h["ce-time"]
        assert h["content-type"].startswith("application/json")
        name = data["name"].removeprefix("raw/")
        assert data["bucket"] == settings.bucket
        assert data["generation"] == generations[name]
        assert data["size"] == str(len(sample_raw[name]))
        for key in ("metageneration", "contentType", "md5Hash", "timeCreated", "updated"):
            assert data[key], key
    # nothing new: nothing sent; a new generation: one event
    assert bridge.step() == []
    store.write(settings, "raw/precio_leche.csv", sample_raw["precio_leche.csv"])
    assert [n for n, _ in bridge.step()] == ["raw/precio_leche.csv"]
    bridge.drain()
    assert len(receiver.requests) == 4
    bridge.stop()


def _about(request: dict[str, Any], name: str) -> bool:
    return bool(json.loads(request["body"])["name"] == name)


def test_bridge_retries_a_failed_delivery_until_it_is_answered_holding_up_no_other(
    settings: LocalSettings,
    sample_raw: dict[str, bytes],
    receiver_factory: Callable[..., Receiver],
    tmp_path: Path,
) -> None:
    """A sink that fails one version many times over: the bridge sends it again and again,
    after a backoff that grows up to its cap, until it is answered, with no restart; another
    version is delivered meanwhile; the state file holds only what was answered."""
    price, other = "raw/precio_leche.csv", "raw/banco_central.csv"
    failures = 8
    seen: dict[str, int] = {}

    def answer(n: int) -> int:
        name = json.loads(receiver.requests[n]["body"])["name"]
        seen[name] = seen.get(name, 0) + 1
        # the price's event fails 8 times, and until the other file's event went through
        if name == price and (seen[name] <= failures or other not in seen):
            return 503
        return 200

    receiver = receiver_factory(answer=answer)
    state = tmp_path / "bridge.json"
    bridge = watcher.Bridge(
        settings,
        receiver.url,
        state_file=state,
        quiet=0.1,
        poll=0.05,
        min_retry=0.05,
        max_retry=0.2,
    )
    store.write(settings, price, sample_raw["precio_leche.csv"])
    thread = bridge.start()
    try:
        assert _until(lambda: seen.get(price, 0) >= 2), "the failed delivery was not retried"
        store.write(settings, other, sample_raw["banco_central.csv"])
        assert _until(lambda: state.exists() and other in json.loads(state.read_text()))
        # the other file's event went through while the price's still fails, not saved
        assert price not in json.loads(state.read_text())
        assert _until(lambda: price in json.loads(state.read_text())), "never delivered"
        assert thread.is_alive()
    finally:
        bridge.stop()
    sent = [r for r in receiver.requests if _about(r, price)]
    assert len(sent) > failures
    assert len({r["headers"]["Ce-Id"] for r in sent}) == 1  # a retry is the same event
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(sent)]
    for i, gap in enumerate(gaps):
        assert gap >= min(0.05 * 2**i, 0.2) * 0.9, (i, gaps)  # it grows ...
    assert max(gaps) < 0.2 + 2.0, gaps  # ... up to its cap (uncapped, the 8th would be 6.4 s)
    assert [d["status"] for d in bridge.delivered if d["name"] == price][-1] == 200


def test_bridge_state_survives_a_restart(
    settings: LocalSettings,
    sample_raw: dict[str, bytes],
    receiver_factory: Callable[..., Receiver],
    tmp_path: Any,
) -> None:
    receiver = receiver_factory()
    state = tmp_path / "bridge.json"
    upload(settings, sample_raw)
    first = watcher.Bridge(settings, receiver.url, state_file=state, quiet=0.1, poll=0.05)
    assert len(first.step()) == 3
    first.drain()
    again = watcher.Bridge(settings, receiver.url, state_file=state, quiet=0.1, poll=0.05)
    assert again.step() == []
    first.stop()


def test_a_delivery_not_answered_is_delivered_again_after_a_restart(
    settings: LocalSettings,
    sample_raw: dict[str, bytes],
    receiver_factory: Callable[..., Receiver],
    tmp_path: Any,
) -> None:
    """A stop during a delivery (a training cut short) or while it waits for its retry: the
    next bridge delivers that upload again instead of forgetting it."""
    failing = receiver_factory(answer=lambda n: 503)
    state = tmp_path / "bridge.json"
    upload(settings, sample_raw)
    first = watcher.Bridge(settings, failing.url, state_file=state, quiet=0.1, poll=0.05)
    assert len(first.step()) == 3
    first.drain()
    first.stop()
    assert len(failing.requests) == 3 and not state.exists()
    working = receiver_factory()
    again = watcher.Bridge(settings, working.url, state_file=state, quiet=0.1, poll=0.05)
    assert len(again.step()) == 3
    again.drain()
    again.stop()
    assert len(working.requests) == 3
    assert sorted(json.loads(state.read_text())) == [f"raw/{n}" for n in sorted(sample_raw)]


def test_scheduler_retries_and_never_overlaps(
    settings: LocalSettings, receiver_factory: Callable[..., Receiver]
) -> None:
    # every call takes longer than the one-second cron; the first answers 503
    receiver = receiver_factory(answer=lambda n: 503 if n == 0 else 200, delay=1.5)
    schedule = LocalSettings(
        bucket=settings.bucket, schedule="* * * * * *", timezone="UTC", train_token="tok"
    )
    retry = scheduler.Retry(attempts=3, deadline=10, min_backoff=0.2, max_backoff=0.5)
    jobs = scheduler.start_scheduler(schedule, receiver.url, retry)
    try:
        time.sleep(5.5)
    finally:
        jobs.shutdown(wait=True)
    assert receiver.most_active == 1  # never two runs at once
    assert len(receiver.requests) >= 3
    first, second = receiver.requests[0], receiver.requests[1]
    assert second["at"] - first["at"] >= 1.5 + 0.2  # the retry came after its backoff
    for r in receiver.requests:
        assert r["headers"]["Authorization"] == "Bearer tok"
        assert json.loads(r["body"]) == {"trigger": "schedule"}


def test_scheduled_training_gives_up_after_its_attempts(
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory(answer=lambda n: 500)
    slept: list[float] = []
    retry = scheduler.Retry(attempts=4, deadline=5, min_backoff=1, max_backoff=3)
    assert scheduler.scheduled_training(receiver.url, "", retry, slept.append) == 500
    assert slept == [1, 2, 3] and len(receiver.requests) == 4


def test_a_bad_crontab_names_the_variable() -> None:
    from milkprice.errors import ConfigError

    with pytest.raises(ConfigError, match="MILKPRICE_SCHEDULE"):
        scheduler.cron("every day", "UTC")


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _count(receiver: Receiver, n: int) -> Callable[[], bool]:
    return lambda: len(receiver.requests) == n


def _tracebacks(
    caplog: pytest.LogCaptureFixture, logger: str = "milkprice.bridge"
) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.exc_info]


def test_bridge_survives_a_step_that_raises(
    settings: LocalSettings,
    sample_raw: dict[str, bytes],
    receiver_factory: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = receiver_factory()
    bridge = watcher.Bridge(settings, receiver.url, quiet=0.1, poll=0.05, backoff=0.05)
    looks = {"n": 0}
    real_changes = bridge.changes

    def changes_failing_once() -> list[tuple[str, str]]:
        looks["n"] += 1
        if looks["n"] == 1:
            raise OSError("disk gone")  # not a MilkPriceError: it used to end the thread
        return real_changes()

    monkeypatch.setattr(bridge, "changes", changes_failing_once)
    store.write(settings, "raw/precio_leche.csv", sample_raw["precio_leche.csv"])
    thread = bridge.start()
    try:
        assert _until(lambda: len(receiver.requests) == 1), "nothing delivered after the failure"
        assert thread.is_alive()
        assert any("disk gone" in str(r.exc_info[1]) for r in _tracebacks(caplog) if r.exc_info)
    finally:
        bridge.stop()


def test_bridge_survives_a_state_file_it_cannot_write(
    settings: LocalSettings,
    sample_raw: dict[str, bytes],
    receiver_factory: Callable[..., Receiver],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = receiver_factory()
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made under a file
    state = blocker / "var" / "bridge-state.json"
    bridge = watcher.Bridge(
        settings, receiver.url, state_file=state, quiet=0.1, poll=0.05, backoff=0.05
    )
    thread = bridge.start()
    try:
        for n in (1, 2):  # two uploads one after the other: each is delivered
            payload = sample_raw["precio_leche.csv"] + b"\n" * n
            store.write(settings, "raw/precio_leche.csv", payload)
            assert _until(_count(receiver, n)), f"upload {n} not delivered"
        assert thread.is_alive()
        assert _tracebacks(caplog), "the failed state write was not logged with its traceback"
    finally:
        bridge.stop()


def test_state_paths_are_taken_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert LocalSettings().state_path("bridge-state.json") == tmp_path / "var" / "bridge-state.json"
    assert LocalSettings(state_dir="state").state_path() == tmp_path / "state"
    elsewhere = tmp_path / "elsewhere"
    assert LocalSettings(state_dir=str(elsewhere)).state_path("x") == elsewhere / "x"
    package = Path(scheduler.__file__).resolve().parents[1]
    assert not LocalSettings().state_path().is_relative_to(package)


def test_bridge_creates_its_state_folder_under_the_working_directory(
    settings: LocalSettings,
    sample_raw: dict[str, bytes],
    receiver_factory: Callable[..., Receiver],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    receiver = receiver_factory()
    state = settings.state_path("bridge-state.json")
    bridge = watcher.Bridge(settings, receiver.url, state_file=state, quiet=0.1, poll=0.05)
    upload(settings, sample_raw)
    assert len(bridge.step()) == 3
    bridge.drain()
    bridge.stop()
    assert (tmp_path / "var" / "bridge-state.json").is_file()
    assert len(json.loads(state.read_text())) == 3


def test_a_scheduled_job_that_raises_is_logged_and_the_schedule_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    def training_failing_once(url: str, token: str, retry: scheduler.Retry) -> int:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("unexpected")
        return 200

    monkeypatch.setattr(scheduler, "scheduled_training", training_failing_once)
    schedule = LocalSettings(schedule="* * * * * *", timezone="UTC")
    jobs = scheduler.start_scheduler(schedule, "http://127.0.0.1:9/")
    try:
        assert _until(lambda: len(calls) >= 2, timeout=10), "the schedule stopped"
    finally:
        jobs.shutdown(wait=True)
    logged = _tracebacks(caplog, "milkprice.local.scheduler")
    assert logged and "scheduled training failed" in logged[0].getMessage()
