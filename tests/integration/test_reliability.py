"""A bad day: broken uploads, races, a crash mid-promotion, the bucket going away.

Everything runs as deployed: functions-framework processes, the real fake-gcs-server, the
real upload bridge. The rule checked everywhere: a clear error, the serving model untouched,
no data lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milkprice import contract, store
from milkprice.bridge import watcher
from milkprice.local import processes
from milkprice.local.object_stores import fake_gcs
from milkprice.settings import LocalSettings
from tests.support import deliveries
from tests.support.buckets import new_settings, runs, trained_bucket, upload
from tests.support.paths import ROOT
from tests.support.servers import Function, call, env_for
from tests.support.uploads import bad_files

pytestmark = pytest.mark.slow
PRICE = store.RAW_PREFIX + "precio_leche.csv"


def serving_version(predict: Function) -> str:
    status, doc = call(predict.url + "forecast", method="GET")
    assert status == 200, doc
    return str(doc["model_version"])


@pytest.fixture
def functions() -> Iterator[list[Function]]:
    started: list[Function] = []
    yield started
    for f in started:
        f.stop()


# ---------------------------------------------------------------- bad uploads


def test_bad_uploads_fail_clearly_and_lose_nothing(
    gcs: str, tmp_path: Path, sample_raw: dict[str, bytes], functions: list[Function]
) -> None:
    settings, good = trained_bucket(sample_raw, 6)
    pointer = contract.read_pointer(settings)
    env = env_for(settings, gcs, tmp_path)
    trainer = Function("train_event", "train", env, "cloudevent")
    predict = Function("predict", "predict", env)
    functions += [trainer, predict]
    assert serving_version(predict) == good["version"]
    bridge = watcher.Bridge(settings, trainer.url, quiet=0.2, poll=0.1)
    bridge.seen = dict(store.list_names(settings, store.RAW_PREFIX))
    survived = 0
    cases = bad_files(sample_raw)
    for case, name, payload, words in cases:
        before = len(runs(settings))
        bad_gen = store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")
        delivered = bridge.step()
        assert [n for n, _ in delivered] == [store.RAW_PREFIX + name], case
        bridge.drain()
        assert bridge.delivered[-1]["status"] == 200, case
        records = runs(settings)
        assert len(records) == before + 1, case
        [record] = [r for r in records if r.get("event", {}).get("generation") == str(bad_gen)]
        assert record["outcome"] == "failed" and record["trigger"] == "upload", case
        for word in words:
            assert word in record["reason"], (case, word, record["reason"])
        assert contract.read_pointer(settings) == pointer, case
        assert serving_version(predict) == good["version"], case
        kept = store.read(settings, store.RAW_PREFIX + name)
        assert kept is not None and kept.data == payload, case  # still there to inspect
        # put the good file back quietly (as if the bridge had seen it), for the next case
        gen = store.write(settings, store.RAW_PREFIX + name, sample_raw[name], "text/csv")
        bridge.seen[store.RAW_PREFIX + name] = gen
        survived += 1
    bridge.stop()
    assert survived == len(cases) >= 12
    # and every raw generation a model was trained on is still in the archive
    manifest = contract.read_manifest(settings, good["version"])
    for entry in manifest.inputs.values():
        assert store.read(settings, entry.archive) is not None


# ---------------------------------------------------------------- races and crashes


def test_two_trainings_at_once_promote_exactly_once(
    gcs: str, tmp_path: Path, sample_raw: dict[str, bytes], functions: list[Function]
) -> None:
    settings = new_settings(backtest_months=6)
    upload(settings, sample_raw)
    env = env_for(settings, gcs, tmp_path)
    http = Function("train_http", "train", env)
    event = Function("train_event", "train", env, "cloudevent")
    functions += [http, event]
    bridge = watcher.Bridge(settings, event.url, quiet=0.1, poll=0.05)
    answers: list[tuple[int, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(call(http.url, {"trigger": "http"})))
    thread.start()
    bridge.step()  # the three raw files' events: one training, two skipped
    bridge.drain(timeout=300)
    thread.join(timeout=300)
    bridge.stop()
    records = runs(settings)
    outcomes = sorted(r["outcome"] for r in records)
    assert outcomes == ["not_promoted", "promoted"], records
    loser = next(r for r in records if r["outcome"] == "not_promoted")
    assert "another run promoted" in loser["reason"]
    winner = next(r for r in records if r["outcome"] == "promoted")
    pointer = contract.read_pointer(settings)
    assert pointer is not None and pointer[0].version == winner["version"]
    assert {r["trigger"] for r in records} == {"http", "upload"}


KILL_BEFORE_PROMOTE = """
import os, signal, sys
from milkprice import contract
from milkprice.train import runner
from milkprice.settings import LocalSettings
contract.promote = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
runner.run(LocalSettings.from_env(), "http")
"""


def test_a_crash_between_artifacts_and_pointer_keeps_the_old_model(
    gcs: str, tmp_path: Path, sample_raw: dict[str, bytes], functions: list[Function]
) -> None:
    settings, old = trained_bucket(sample_raw, 6)
    env = env_for(settings, gcs, tmp_path)
    predict = Function("predict", "predict", env)
    functions.append(predict)
    crashed = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE_PROMOTE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    versions = contract.versions(settings)
    assert len(versions) == 2  # the new artifacts were written ...
    pointer = contract.read_pointer(settings)
    assert pointer is not None and pointer[0].version == old["version"]  # ... not promoted
    time.sleep(1)
    assert serving_version(predict) == old["version"]


CLAIM_TIMEOUT = 8  # seconds; a heartbeat every 2.7


def test_an_upload_whose_run_died_is_redelivered_until_taken_over_and_trained(
    gcs: str, tmp_path: Path, sample_raw: dict[str, bytes], functions: list[Function]
) -> None:
    """A run killed mid-training holds its raw versions' claim: a redelivery is answered 503
    with Retry-After while the claim is fresh (never a 200 that drops the event), and once its
    heartbeat has lapsed, a redelivery takes the claim over and a model of those versions
    serves."""
    # every candidate: a run long enough to be killed in the middle of its backtest
    settings = new_settings(backtest_months=6, candidates="")
    tokens = upload(settings, sample_raw)
    env = env_for(settings, gcs, tmp_path, MILKPRICE_CLAIM_TIMEOUT=str(CLAIM_TIMEOUT))
    doomed = Function("train_events", "train", env)
    # started now: a process starts more slowly than a heartbeat lapses
    spare = Function("train_events", "train", env)
    functions += [doomed, spare]
    event = deliveries.upload_event(settings, PRICE)
    thread, _ = deliveries.deliver_in_background(doomed.url, event)
    dead = deliveries.new_run(settings, set(), lambda r: (r.stage or "").startswith("backtest"))
    alive = deliveries.deliver(spare.url, event)  # (its first call also imports the training)
    assert alive.status == 503 and alive.json()["earlier"]["run_id"] == dead.run_id, alive
    os.killpg(doomed.proc.pid, signal.SIGKILL)  # mid-training, claim taken, nothing promoted
    killed = time.monotonic()
    thread.join(timeout=60)
    answers: list[tuple[float, int, str]] = []  # (seconds after the kill, status, Retry-After)
    while True:
        answer = deliveries.deliver(spare.url, event)
        wait = answer.headers.get("Retry-After", "")
        answers.append((round(time.monotonic() - killed, 1), answer.status, wait))
        if answer.status != 503:
            break
        assert time.monotonic() - killed < 3 * CLAIM_TIMEOUT, answers
        time.sleep(int(wait))
    took = time.monotonic() - killed
    record = answer.json()
    assert answers[0][1] == 503 and 1 <= int(answers[0][2]) <= CLAIM_TIMEOUT, answers
    assert answer.status == 200 and record["outcome"] == "promoted", (answers, record)
    assert record["earlier"]["run_id"] == dead.run_id  # taken over from the dead run
    trained_on = {name: entry["token"] for name, entry in record["inputs"].items()}
    assert trained_on == {store.RAW_PREFIX + n: t for n, t in tokens.items()}
    found = contract.read_pointer(settings)
    assert found is not None and found[0].version == record["version"]
    assert took <= CLAIM_TIMEOUT + record["seconds"] + 5, (took, answers, record["seconds"])
    print(f"answers after the kill: {answers}; promoted {record['version']} in {took:.1f} s")
    stuck = contract.read_run(settings, dead.run_id)  # the dead run's record says where it died
    assert stuck is not None and stuck.outcome == "running" and stuck.stage


# ---------------------------------------------------------------- storage outage


@pytest.mark.long  # the outage and the checks' backoff run their real course: a minute and a half
def test_storage_outage_keeps_serving_and_recovers(
    tmp_path: Path, sample_raw: dict[str, bytes], functions: list[Function]
) -> None:
    port = processes.free_port()
    root = tmp_path / "gcs"
    own = fake_gcs.start(root, port)
    host = fake_gcs.url("127.0.0.1", port)
    try:
        settings = LocalSettings(
            bucket="outage", project="outage-test", backtest_months=6, long_backtest_months=0
        )
        env = env_for(settings, host, tmp_path / "state")
        trainer = Function("train_http", "train", env)
        functions.append(trainer)
        os.environ["STORAGE_EMULATOR_HOST"] = host
        store.reset()
        store.ensure_bucket(settings)
        upload(settings, sample_raw)
        status, first = call(trainer.url, {"trigger": "http"})
        assert status == 200 and first["outcome"] == "promoted"
        predict = Function("predict", "predict", env)
        functions.append(predict)
        assert serving_version(predict) == first["version"]

        fake_gcs.stop(own)  # the bucket goes away
        failures = served = 0
        until = time.monotonic() + 15  # longer than one storage call's retry deadline
        while time.monotonic() < until:
            status, _doc = call(predict.url + "forecast", method="GET", timeout=10)
            failures += status != 200
            served += 1
            time.sleep(0.02)
        assert failures == 0 and served > 100
        assert call(predict.url + "v2/health/ready", method="GET")[0] == 200
        status, record = call(trainer.url, {"trigger": "http"}, timeout=120)
        assert status >= 500 and record["outcome"] == "failed"
        assert "storage unavailable" in record["reason"]

        own = fake_gcs.start(root, port)  # back, with everything it held
        status, second = call(trainer.url, {"trigger": "http"})
        assert status == 200 and second["outcome"] == "promoted", second
        deadline = time.monotonic() + 30
        while serving_version(predict) != second["version"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serving_version(predict) == second["version"]
        logged = [
            json.loads(line)
            for line in predict.log.read_text().splitlines()
            if line.startswith("{")
        ]
        failed = [e["message"] for e in logged if e["severity"] in ("WARNING", "ERROR")]
        assert failed  # the outage was logged, and the checks backed off
        waits = [
            float(m.rsplit("next check in ", 1)[1].split()[0])
            for m in failed
            if "next check in" in m
        ]
        assert len(waits) >= 2 and waits[1] > waits[0]
    finally:
        fake_gcs.stop(own)
        store.reset()


# ---------------------------------------------------------------- security


def test_no_pickle_or_joblib_anywhere() -> None:
    paths = [*ROOT.glob("milkprice/**/*.py"), *ROOT.glob("functions/*/main.py")]
    assert len(paths) > 40  # every subpackage is read, not only the top of the package
    for path in paths:
        text = path.read_text()
        for word in ("import pickle", "import joblib", "from joblib", "cloudpickle"):
            assert word not in text, (path, word)


def test_the_train_token_never_reaches_the_logs(
    gcs: str, tmp_path: Path, sample_raw: dict[str, bytes], functions: list[Function]
) -> None:
    settings = new_settings(backtest_months=6)
    upload(settings, sample_raw)
    secret = "tok-" + os.urandom(8).hex()
    trainer = Function(
        "train_http", "train", env_for(settings, gcs, tmp_path, MILKPRICE_TRAIN_TOKEN=secret)
    )
    functions.append(trainer)
    assert call(trainer.url, {"trigger": "http"})[0] == 401
    status, record = call(
        trainer.url, {"trigger": "http"}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert status == 200 and record["outcome"] == "promoted"
    trainer.stop()
    functions.remove(trainer)
    log = trainer.log.read_text()
    assert log.strip() and secret not in log
    for r in runs(settings):
        assert secret not in json.dumps(r)
