"""``milkprice up``: the whole system on one machine, no Docker.

fake-gcs-server plays the bucket, two Functions Framework processes play the train function
(its HTTP trigger and its storage trigger) and one the predict function, and an ``events``
process plays Cloud Scheduler and Eventarc. Every child's lines are printed prefixed with its
name; Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from milkprice import store
from milkprice.errors import Conflict, MilkPriceError
from milkprice.local import console, emulator, processes, sample
from milkprice.settings import Settings

ROOT = Path(__file__).resolve().parents[2]  # the checkout: up runs from one
FUNCTIONS = ROOT / "functions"


class StackError(MilkPriceError):
    """Something stops the local stack from starting; the message says what to do."""


# How lines are shown; ``milkprice up`` picks it before starting, JSON keeps a collector's form.
shown: console.Shown = "json"


def show_as(choice: console.Shown) -> None:
    global shown
    shown = choice


def say(message: str) -> None:
    console.emit(console.say(message, shown))


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line:
            console.emit(console.render(name, line, shown))


def spawn(name: str, args: list[str], env: dict[str, str]) -> processes.Process:
    """A child in a process group of its own, its lines shown behind its name."""
    child = processes.start(name, args, env, cwd=ROOT, output=subprocess.PIPE)
    assert child.popen.stdout is not None
    threading.Thread(target=_pump, args=(name, child.popen.stdout), daemon=True).start()
    return child


def stop_all(children: list[processes.Process], settings: Settings, signal_name: str) -> None:
    """Stop the functions and the event source, record cut-short runs, then the bucket.

    Every child's whole process group goes, so a worker busy in a training cannot outlive its
    master and hold the port. The bucket goes last so that the runs the stop cut short can be
    marked as such.
    """
    bucket = [c for c in children if c.name == "gcs"]
    processes.stop([c for c in children if c.name != "gcs"])
    if bucket and bucket[0].alive():
        with contextlib.suppress(MilkPriceError):
            for run_id in interrupted_runs(settings, signal_name):
                say(f"run {run_id} was cut short by the stop; its record says so")
    processes.stop(bucket)


def interrupted_runs(settings: Settings, signal_name: str) -> list[str]:
    """Mark the runs still 'running' as failed: no process is left to finish them.

    A failed run that is not the data's fault lets the next delivery of the same raw
    generations train again (see ``training._claim``).
    """
    marked = []
    for name in _recent_run_names(settings, 10):
        found = store.read_json(settings, name)
        if not found or found[0].get("outcome") != "running":
            continue
        record, generation = found
        stage = record.pop("stage", "starting")
        record.update(
            outcome="failed",
            reason=f"stopped: the local stack got {signal_name} while this run was at "
            f"stage '{stage}'; the pointer was not moved",
            finished=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        with contextlib.suppress(Conflict):  # it finished after all: its own record stands
            store.write_json(settings, name, record, if_generation_match=generation)
            marked.append(str(record["run_id"]))
    return marked


def _recent_run_names(settings: Settings, last: int) -> list[str]:
    names = [n for n, _ in store.list_names(settings, store.RUNS_PREFIX) if n.count("/") == 1]
    return sorted(names)[-last:]


def lock(state: Path) -> IO[str]:
    """Hold var/up.lock for the life of this process: a second ``up`` fails at once."""
    state.mkdir(parents=True, exist_ok=True)
    handle = (state / "up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        raise StackError(
            f"another 'make up' is already running (pid {pid}); stop it first (Ctrl-C there)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def check_ports(settings: Settings) -> None:
    wanted = {
        "MILKPRICE_GCS_PORT": settings.gcs_port,
        "MILKPRICE_PREDICT_PORT": settings.predict_port,
        "MILKPRICE_TRAIN_PORT": settings.train_port,
        "MILKPRICE_EVENT_PORT": settings.event_port,
    }
    for variable, port in wanted.items():
        with socket.socket() as s:
            # as the servers bind: a listener holds the port, a closed connection's TIME_WAIT
            # (left by the last stop) does not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((settings.host, port))
            except OSError:
                raise StackError(
                    f"port {port} on {settings.host} is in use; free it or set {variable}"
                ) from None


def train_token(settings: Settings, state: Path) -> str:
    """The configured token, else one generated once and kept in var/train-token."""
    if settings.train_token:
        return settings.train_token
    path = state / "train-token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def seed_data(settings: Settings, data_dir: str | None) -> str:
    if data_dir:
        for name, payload in sample.read_folder(data_dir).items():
            store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")
        return f"uploaded the CSVs of {data_dir} to raw/"
    if store.list_names(settings, store.RAW_PREFIX):
        return "raw/ already holds data; kept it"
    for name, payload in sample.sample_files().items():
        store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")
    return "raw/ was empty: uploaded the generated sample data"


def get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def wait_ready(
    settings: Settings,
    children: list[processes.Process],
    stopping: Callable[[], bool],
    limit: float = 600,
) -> bool:
    """Wait for predict to be ready, showing what the first training is doing."""
    url = f"http://{settings.host}:{settings.predict_port}/v2/health/ready"
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < limit and not stopping():
        if get(url) == 200:
            return True
        dead = [c.name for c in children if not c.alive()]
        if dead:
            raise StackError(f"{', '.join(dead)} stopped; see its lines above")
        status = _training_status(settings)
        line = f"waiting for the first model ({time.monotonic() - start:.0f} s): {status}"
        if line.split(":", 1)[1] != last:
            say(line)
            last = line.split(":", 1)[1]
        time.sleep(1.0)
    return False


def _training_status(settings: Settings) -> str:
    try:
        names = _recent_run_names(settings, 1)
        if not names:
            return "no training run yet"
        found = store.read_json(settings, names[-1])
    except MilkPriceError:
        return "bucket not answering"
    if not found:
        return "starting"
    run: dict[str, Any] = found[0]
    stage = run.get("stage", "starting")
    if run.get("outcome") == "running":
        return f"run {run['run_id']} ({run['trigger']}) at stage '{stage}'"
    return f"run {run['run_id']} {run['outcome']}: {run.get('reason', '')}"


def example_request(settings: Settings, state: Path) -> Path:
    """A /predict body with the serving model's next-month row, for the printed example."""
    path = state / "example-request.json"
    pointer = store.read_json(settings, store.POINTER)
    manifest = pointer and store.read_json(
        settings, store.model_path(pointer[0]["version"], "manifest.json")
    )
    row = manifest[0]["next"]["features"] if manifest else {}
    path.write_text(json.dumps({"data": [row]}, indent=1))
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def function(
    target: str, source: str, port: int, settings: Settings, signature: str = "http"
) -> list[str]:
    return processes.function_command(
        target, FUNCTIONS / source / "main.py", port, settings.host, signature
    )


def up(settings: Settings, data_dir: str | None = None) -> int:
    state = settings.state_path().resolve()
    handle = lock(state)
    check_ports(settings)
    stopping = threading.Event()
    got: list[str] = []

    def on_signal(number: int, _: object) -> None:
        got.append(signal.Signals(number).name)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    token = train_token(settings, state)
    gcs_url = emulator.url(settings.host, settings.gcs_port)
    env = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "MILKPRICE_TRAIN_TOKEN": token,
        # the children run in the checkout: the absolute folder keeps them on up's own state
        "MILKPRICE_STATE_DIR": str(state),
        "PYTHONUNBUFFERED": "1",
    }
    os.environ["STORAGE_EMULATOR_HOST"] = gcs_url
    children: list[processes.Process] = []
    try:
        say(f"starting fake-gcs-server on {gcs_url} (data in {state / 'gcs'})")
        gcs = emulator.start(state / "gcs", settings.gcs_port, settings.host, log=subprocess.PIPE)
        assert gcs.stdout is not None
        threading.Thread(target=_pump, args=("gcs", gcs.stdout), daemon=True).start()
        children.append(processes.Process("gcs", gcs))
        store.ensure_bucket(settings)
        say(f"bucket gs://{settings.bucket}: {seed_data(settings, data_dir)}")
        serving = {**env, "WORKERS": "1", "THREADS": "8", "OMP_NUM_THREADS": "1"}
        children.append(
            spawn(
                "predict",
                function("predict", "predict", settings.predict_port, settings),
                serving,
            )
        )
        children.append(
            spawn(
                "train",
                function("train_http", "train", settings.train_port, settings),
                env,
            )
        )
        children.append(
            spawn(
                "train-events",
                function("train_event", "train", settings.event_port, settings, "cloudevent"),
                env,
            )
        )
        children.append(
            spawn("events", [sys.executable, "-m", "milkprice.local.cli", "events"], env)
        )
        if not wait_ready(settings, children, stopping.is_set):
            if stopping.is_set():
                say("stopping")
                return 0
            raise StackError("no model became ready; see the lines above")
        base = f"http://{settings.host}:{settings.predict_port}"
        say(f"ready. predict: {base}/   train: http://{settings.host}:{settings.train_port}/")
        example = example_request(settings, state)
        say(f"try:  curl {base}/forecast")
        say(f"      curl -X POST {base}/predict -H 'Content-Type: application/json' -d @{example}")
        say("Ctrl-C stops everything")
        while not stopping.wait(1.0):
            dead = [c.name for c in children if not c.alive()]
            if dead:
                raise StackError(f"{', '.join(dead)} stopped unexpectedly; see its lines above")
        say("stopping")
        return 0
    finally:
        stop_all(children, settings, got[0] if got else "an error")
        handle.close()
