"""``milkprice up``: the whole system on one machine, no Docker.

fake-gcs-server plays the bucket, two Functions Framework processes play the train function
(its HTTP trigger and its storage trigger) and one the predict function, and an ``events``
process plays Cloud Scheduler and Eventarc. Every child's lines are printed prefixed with its
name; Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from milkprice import console, emulator, sample, store
from milkprice.errors import MilkPriceError
from milkprice.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
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


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line:
            console.emit(console.render(name, line, shown))


def spawn(name: str, args: list[str], env: dict[str, str]) -> Child:
    proc = subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
    )
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(name, proc.stdout), daemon=True).start()
    return Child(name, proc)


def stop_all(children: list[Child]) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.terminate()
    deadline = time.monotonic() + 8
    for child in reversed(children):
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()


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
        with __import__("socket").socket() as s:
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
    settings: Settings, children: list[Child], stopping: Callable[[], bool], limit: float = 600
) -> bool:
    """Wait for predict to be ready, showing what the first training is doing."""
    url = f"http://{settings.host}:{settings.predict_port}/v2/health/ready"
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < limit and not stopping():
        if get(url) == 200:
            return True
        dead = [c.name for c in children if c.proc.poll() is not None]
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
        names = sorted(
            n for n, _ in store.list_names(settings, store.RUNS_PREFIX) if n.count("/") == 1
        )
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


def functions_framework(
    target: str, source: str, port: int, settings: Settings, signature: str = "http"
) -> list[str]:
    return [
        str(Path(sys.executable).parent / "functions-framework"),
        "--target",
        target,
        "--source",
        str(FUNCTIONS / source / "main.py"),
        "--signature-type",
        signature,
        "--host",
        settings.host,
        "--port",
        str(port),
    ]


def up(settings: Settings, data_dir: str | None = None) -> int:
    state = (ROOT / settings.state_dir).resolve()
    handle = lock(state)
    check_ports(settings)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    token = train_token(settings, state)
    gcs_url = emulator.url(settings.host, settings.gcs_port)
    env = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "MILKPRICE_TRAIN_TOKEN": token,
        "PYTHONUNBUFFERED": "1",
    }
    os.environ["STORAGE_EMULATOR_HOST"] = gcs_url
    children: list[Child] = []
    try:
        say(f"starting fake-gcs-server on {gcs_url} (data in {state / 'gcs'})")
        gcs = emulator.start(state / "gcs", settings.gcs_port, settings.host, log=subprocess.PIPE)
        assert gcs.stdout is not None
        threading.Thread(target=_pump, args=("gcs", gcs.stdout), daemon=True).start()
        children.append(Child("gcs", gcs))
        store.ensure_bucket(settings)
        say(f"bucket gs://{settings.bucket}: {seed_data(settings, data_dir)}")
        serving = {**env, "WORKERS": "1", "THREADS": "8", "OMP_NUM_THREADS": "1"}
        children.append(
            spawn(
                "predict",
                functions_framework("predict", "predict", settings.predict_port, settings),
                serving,
            )
        )
        children.append(
            spawn(
                "train",
                functions_framework("train_http", "train", settings.train_port, settings),
                env,
            )
        )
        children.append(
            spawn(
                "train-events",
                functions_framework(
                    "train_event", "train", settings.event_port, settings, "cloudevent"
                ),
                env,
            )
        )
        children.append(spawn("events", [sys.executable, "-m", "milkprice.cli", "events"], env))
        if not wait_ready(settings, children, stopping.is_set):
            if stopping.is_set():
                return 0
            raise StackError("no model became ready; see the lines above")
        base = f"http://{settings.host}:{settings.predict_port}"
        say(f"ready. predict: {base}/   train: http://{settings.host}:{settings.train_port}/")
        example = example_request(settings, state)
        say(f"try:  curl {base}/forecast")
        say(f"      curl -X POST {base}/predict -H 'Content-Type: application/json' -d @{example}")
        say("Ctrl-C stops everything")
        while not stopping.wait(1.0):
            dead = [c.name for c in children if c.proc.poll() is not None]
            if dead:
                raise StackError(f"{', '.join(dead)} stopped unexpectedly; see its lines above")
        say("stopping")
        return 0
    finally:
        stop_all(children)
        handle.close()
