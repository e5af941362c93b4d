"""Model versions by name under clients that cycle through them, or ask while storage stalls.

A bucket of its own, in a fake-gcs-server of its own that a test can pause (SIGSTOP) and
resume, holding the sample model under several version names; a predict server as deployed
(functions-framework over gunicorn) reads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from milkprice import store
from milkprice.local import processes
from milkprice.local.object_stores import fake_gcs
from milkprice.predict.versions import KEPT, LOADS
from milkprice.settings import Settings
from tests.support.buckets import pointer, promote
from tests.support.raw_http import Answer, request
from tests.support.servers import Function, env_for

OLD = [f"v{k}" for k in range(1, 6)]
SERVED = "v9-served"
SDK_WORDS = ("HTTPConnectionPool", "Errno", "Timeout of", "storage unavailable (", "google")


class Bucket:
    """The own emulator and the settings of its bucket."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, settings: Settings) -> None:
        self.proc, self.host, self.settings = proc, host, settings

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Storage that accepts connections and never answers, until the block ends."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)


def copy_serving(source: Settings, host: str, target: Settings, names: list[str]) -> None:
    """The serving version of ``source`` (in the session's emulator) written into ``target``,
    in the emulator at ``host``, under each of ``names``."""
    version = pointer(source)["version"]
    prefix = store.model_path(version, "")
    files = {}
    for name, _ in store.list_names(source, prefix):
        blob = store.read(source, name)
        assert blob is not None
        files[name.removeprefix(prefix)] = blob.data
    saved = os.environ["STORAGE_EMULATOR_HOST"]
    os.environ["STORAGE_EMULATOR_HOST"] = host
    store.reset()
    try:
        store.ensure_bucket(target)
        for new in names:
            for file, data in files.items():
                if file == "manifest.json":
                    data = json.dumps({**json.loads(data), "version": new}).encode()
                store.write(target, store.model_path(new, file), data)
        promote(target, names[-1])
    finally:
        os.environ["STORAGE_EMULATOR_HOST"] = saved
        store.reset()


@pytest.fixture(scope="module")
def bucket(
    trained_sample: tuple[Settings, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bucket]:
    port = processes.free_port()
    proc = fake_gcs.start(tmp_path_factory.mktemp("own-gcs"), port)
    host = fake_gcs.url("127.0.0.1", port)
    try:
        target = Settings(bucket="versions", backtest_months=6, long_backtest_months=0)
        copy_serving(trained_sample[0], host, target, [*OLD, SERVED])
        yield Bucket(proc, host, target)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        fake_gcs.stop(proc)


@contextmanager
def serving(bucket: Bucket, tmp_path: Path, reload_seconds: float) -> Iterator[Function]:
    """A predict server of its own, ready."""
    env = env_for(
        bucket.settings, bucket.host, tmp_path, MILKPRICE_RELOAD_SECONDS=str(reload_seconds)
    )
    function = Function("predict", "predict", env)
    try:
        assert ready(function, SERVED).status == 200
        yield function
    finally:
        function.stop()


@pytest.fixture
def server(bucket: Bucket, tmp_path: Path) -> Iterator[Function]:
    """A server for the test, that looks at the pointer and the versions once a minute."""
    with serving(bucket, tmp_path, 60) as function:
        yield function


def ready(function: Function, version: str, timeout: float = 60) -> Answer:
    path = f"/v2/models/forecast/versions/{version}/ready"
    return request(function.port, "GET", path, content_type=None, timeout=timeout)


def loads(function: Function) -> list[str]:
    """The versions the server loaded by name, in order, from its log."""
    logged = [json.loads(line) for line in function.log.read_text().splitlines() if line[:1] == "{"]
    return [e["version"] for e in logged if e["message"].startswith("loaded model version")]


def test_a_slow_load_holds_only_the_requests_for_its_version(
    bucket: Bucket, server: Function
) -> None:
    assert ready(server, OLD[0]).status == 200
    answers: dict[str, Answer] = {}

    def ask(key: str) -> None:
        answers[key] = ready(server, OLD[1])

    with bucket.paused():
        waiting = [threading.Thread(target=ask, args=(k,)) for k in ("first", "second")]
        for thread in waiting:
            thread.start()
        time.sleep(0.5)  # both are waiting on the one load of OLD[1], stuck on storage
        loaded = ready(server, OLD[0], timeout=10)
        assert loaded.status == 200 and loaded.seconds < 2.0, loaded.seconds
        assert all(thread.is_alive() for thread in waiting)
    for thread in waiting:
        thread.join(timeout=60)
    assert answers["first"].status == answers["second"].status == 200, answers
    assert loads(server) == [OLD[0], OLD[1]]  # one load of OLD[1] for both requests


def test_cycling_through_more_versions_than_are_kept_does_not_reload_each_time(
    server: Function,
) -> None:
    cycle = OLD[: KEPT + 1]
    statuses = []
    for _ in range(3):
        for version in cycle:
            answer = ready(server, version)
            statuses.append(answer.status)
            if answer.status == 503:
                assert 1 <= int(answer.headers["retry-after"]) <= 60, answer.headers
                assert "try again in" in answer.doc["error"], answer.doc
    assert len(loads(server)) <= LOADS < len(statuses)  # not one load a request
    assert statuses[: KEPT + 1] == [200] * (KEPT + 1)
    assert 503 in statuses and statuses[-1] == 200, statuses  # the kept ones still answer


def test_storage_errors_stay_in_the_log(bucket: Bucket, tmp_path: Path) -> None:
    """A version to load, and one to list the versions again for, while storage stalls: the
    clients hear a plain reason, the log has the storage SDK's own words."""
    with serving(bucket, tmp_path, 0.3) as server:
        assert ready(server, OLD[0]).status == 200  # the versions are listed
        answers = storage_stalled(bucket, server)
    known, unknown = answers[OLD[2]], answers["v404"]
    assert known.status == unknown.status == 503, answers
    assert known.doc == {
        "error": f"model version {OLD[2]} could not be read from storage; try again"
    }
    assert unknown.doc == {
        "error": "the model versions could not be listed from storage; try again"
    }
    for answer in (known, unknown):
        assert not any(word in answer.body.decode() for word in SDK_WORDS), answer.body
    log = server.log.read_text()
    assert f"model version {OLD[2]} could not be read: " in log
    assert "listing the model versions failed: " in log
    assert "storage unavailable (" in log  # the SDK's words, for the operator


def storage_stalled(bucket: Bucket, server: Function) -> dict[str, Answer]:
    """The answers for a version not loaded and an unknown one, asked while storage stalls."""
    answers: dict[str, Answer] = {}

    def ask(version: str) -> None:
        answers[version] = ready(server, version)

    with bucket.paused():
        time.sleep(0.5)  # past the listing's interval (0.3 s): an unknown version lists again
        asking = [threading.Thread(target=ask, args=(v,)) for v in (OLD[2], "v404")]
        for thread in asking:
            thread.start()
        for thread in asking:
            thread.join(timeout=60)
    return answers
