"""``milkprice up``: the whole system on one machine, no Docker, on any of the three clouds.

The emulator of ``MILKPRICE_CLOUD`` plays the bucket (``object_stores``: fake-gcs-server, moto's S3
server or Azurite), two Functions Framework processes play the train function (its HTTP
trigger and its event trigger) and one the predict function, and an ``events`` process plays
the scheduler and the cloud's upload events. With ``MILKPRICE_RUNTIME=lambda`` (on aws) the
functions run as on AWS Lambda instead: their handlers under the Runtime Interface Emulator,
HTTP through a Function URL's stand-in (``lambda_front``), S3's notifications invoked as an
event source mapping does (``s3_queue``). Every child's lines are printed prefixed with its
name; Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from milkprice import contract, store
from milkprice import http_client as http
from milkprice.errors import MilkPriceError, StackError
from milkprice.local import (
    console,
    lambda_front,
    lambda_rie,
    object_stores,
    observability,
    processes,
    s3_queue,
    sample,
)
from milkprice.settings import LocalSettings

ROOT = Path(__file__).resolve().parents[2]  # the checkout: up runs from one
FUNCTIONS = ROOT / "functions"
# Emulators of the predict function under RUNTIME=lambda: each serves one request at a time,
# the front lends them out (a request waits for a free one); one per core of a small machine
PREDICT_EMULATORS = 2
LAMBDA_TIMEOUTS = {"predict": 30, "train": 900}  # seconds: each function's time-out
STOP_HINT = "Ctrl-C stops everything"  # the last line up says once the stack is ready


# How lines are shown; ``milkprice up`` picks it before starting, JSON keeps a collector's form.
shown: console.Shown = "json"


def show_as(choice: console.Shown) -> None:
    global shown
    shown = choice


def say(message: str) -> None:
    console.emit(console.say(message, shown))


def _pump(name: str, stream: IO[bytes], skip: Callable[[str], bool] = lambda _: False) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line and not skip(line):
            console.emit(console.render(name, line, shown))


def invocation_bookkeeping(line: str) -> bool:
    """The emulator's START and END lines of every invocation, and the REPORT of a quick
    one (a health check each second while the first model trains): left out of the
    console. A cold start's REPORT (its Init Duration) and a long invocation's are kept."""
    if line.startswith(("START RequestId:", "END RequestId:")):
        return True
    if not line.startswith("REPORT RequestId:") or "Init Duration" in line:
        return False
    took = re.search(r"\tDuration: ([\d.]+) ms", line)
    return took is not None and float(took.group(1)) < 1000.0


def spawn(name: str, args: list[str], env: dict[str, str]) -> processes.Process:
    """A child in a process group of its own, its lines shown behind its name."""
    return shown_lines(processes.start(name, args, env, cwd=ROOT, output=subprocess.PIPE))


def shown_lines(
    child: processes.Process, skip: Callable[[str], bool] = lambda _: False
) -> processes.Process:
    """Show a child's lines (its output a pipe) behind its name, but those ``skip`` takes."""
    assert child.popen.stdout is not None
    args = (child.name, child.popen.stdout, skip)
    threading.Thread(target=_pump, args=args, daemon=True).start()
    return child


def stop_all(children: list[processes.Process], settings: LocalSettings, signal_name: str) -> None:
    """Stop the functions and the event source, record cut-short runs, then the bucket.

    Every child's whole process group goes, so a worker busy in a training cannot outlive its
    master and hold the port. The bucket goes last so that the runs the stop cut short can be
    marked as such.
    """
    bucket = [c for c in children if c.name in object_stores.NAMES]
    processes.stop([c for c in children if c.name not in object_stores.NAMES])
    if bucket and bucket[0].alive():
        with contextlib.suppress(MilkPriceError):
            for run_id in interrupted_runs(settings, signal_name):
                say(f"run {run_id} was cut short by the stop; its record says so")
    processes.stop(bucket)


def interrupted_runs(settings: LocalSettings, signal_name: str) -> list[str]:
    """Mark the runs still 'running' as failed: no process is left to finish them.

    A failed run whose error a retry can help lets the next delivery of the same raw objects
    train again (see the train function's claim).
    """
    marked = []
    for record in contract.list_runs(settings, last=10):
        if record.outcome != "running":
            continue
        stage = record.stage or "starting"
        record.stage, record.outcome = None, "failed"
        record.reason = (
            f"stopped: the local stack got {signal_name} while this run was at stage "
            f"'{stage}'; the pointer was not moved"
        )
        record.error = contract.RunError(error=record.reason, retryable=True)
        record.finished = contract.now()
        contract.write_run(settings, record)
        marked.append(record.run_id)
    return marked


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


def check_ports(settings: LocalSettings) -> None:
    wanted = {
        object_stores.local(settings).port_variable: object_stores.port(settings),
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


def train_token(settings: LocalSettings, state: Path) -> str:
    """The configured token, else one generated once and kept in var/train-token."""
    if settings.train_token:
        return settings.train_token
    path = state / "train-token"
    try:
        # created readable by its owner alone: never, not even for a moment, by anyone else
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(handle, "w") as file:
        file.write(secrets.token_urlsafe(24))
    return read_token(path)


def read_token(path: Path) -> str:
    """The token kept in ``path``; an empty file is an error, not a function left open."""
    token = path.read_text().strip()
    if not token:
        raise StackError(
            f"{path} is empty, and an empty train token would leave the train function open "
            f"to anyone: delete it (the next 'make up' makes a new one) or write a token in it"
        )
    return token


def seed_data(settings: LocalSettings, data_dir: str | None) -> str:
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
    """The status of a GET; 0 when nothing answered."""
    return http.request(url, timeout=timeout).status


def wait_ready(
    settings: LocalSettings,
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


def _training_status(settings: LocalSettings) -> str:
    try:
        runs = contract.list_runs(settings, last=1)
    except MilkPriceError:
        return "bucket not answering"
    if not runs:
        return "no training run yet"
    run = runs[-1]
    if run.outcome == "running":
        return f"run {run.run_id} ({run.trigger}) at stage '{run.stage or 'starting'}'"
    return f"run {run.run_id} {run.outcome}: {run.reason}"


def example_request(settings: LocalSettings, state: Path) -> Path:
    """A /predict body with the serving model's next-month row, for the printed example."""
    path = state / "example-request.json"
    found = contract.serving(settings)
    row = found[1].next.features if found else {}
    path.write_text(json.dumps({"data": [row]}, indent=1))
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def function(
    target: str, source: str, port: int, settings: LocalSettings, signature: str = "http"
) -> list[str]:
    return processes.function_command(
        target, FUNCTIONS / source / "main.py", port, settings.host, signature
    )


class Stopper:
    """SIGINT and SIGTERM set one event, and remember which signal came first."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signals: list[str] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, number: int, _: object) -> None:
        self.signals.append(signal.Signals(number).name)
        self.event.set()

    @property
    def why(self) -> str:
        return self.signals[0] if self.signals else "an error"


def _environment(settings: LocalSettings, state: Path) -> dict[str, str]:
    """What every child gets: the bucket, the train token and up's own state folder."""
    return {
        **os.environ,
        **object_stores.client_env(settings),
        "MILKPRICE_TRAIN_TOKEN": train_token(settings, state),
        # the children run in the checkout: the absolute folder keeps them on up's own state
        "MILKPRICE_STATE_DIR": str(state),
        "PYTHONUNBUFFERED": "1",
    }


def _start_bucket(settings: LocalSettings, state: Path) -> processes.Process:
    own = object_stores.local(settings)
    where = object_stores.where(settings, state)
    say(f"starting {own.what} on {object_stores.url(settings)} ({where})")
    bucket = object_stores.start(settings, state)
    if bucket.popen.stdout is not None:
        threading.Thread(target=_pump, args=(own.name, bucket.popen.stdout), daemon=True).start()
    return bucket


def _prepare_bucket(settings: LocalSettings, data_dir: str | None) -> None:
    """The bucket, its upload events (S3 sends its own: ask it first), then the raw data."""
    store.ensure_bucket(settings)
    if settings.cloud == "aws":
        s3_queue.subscribe(settings)
        say(
            f"bucket {settings.bucket}: new objects under raw/ notify queue "
            f"{s3_queue.queue_name(settings)}"
        )
    say(f"bucket {settings.bucket}: {seed_data(settings, data_dir)}")


def _otel(observed: observability.Observed | None, name: str) -> dict[str, str]:
    """The ``OTEL_*`` variables of the stack's process ``name``: none unless observed."""
    return observed.env(name) if observed else {}


def _start_functions(
    settings: LocalSettings, env: dict[str, str], observed: observability.Observed | None
) -> list[processes.Process]:
    """Both functions as they are deployed, and the stand-ins for the scheduler and events."""
    serving = {**env, "WORKERS": "1", "THREADS": "8", "OMP_NUM_THREADS": "1"}
    # Cloud Storage's events reach a CloudEvent function, as on Cloud Functions; the other
    # clouds' events reach the HTTP function that takes every shape, as on their platforms
    if settings.cloud == "gcp":
        event = function("train_event", "train", settings.event_port, settings, "cloudevent")
    else:
        event = function("train_events", "train", settings.event_port, settings)
    predict = function("predict", "predict", settings.predict_port, settings)
    return [
        spawn("predict", predict, {**serving, **_otel(observed, "predict")}),
        spawn(
            "train",
            function("train_http", "train", settings.train_port, settings),
            {**env, **_otel(observed, "train")},
        ),
        spawn("train-events", event, {**env, **_otel(observed, "train-events")}),
        spawn("events", [sys.executable, "-m", "milkprice.local.cli", "events"], env),
    ]


def _emulator(
    name: str, function: str, env: dict[str, str], settings: LocalSettings, port: int | None = None
) -> lambda_rie.Emulator:
    """One emulator running ``function``'s Lambda handler, its lines shown behind ``name``."""
    timeout = LAMBDA_TIMEOUTS[function]
    own = {**env, **lambda_rie.function_env(f"milk-price-{function}", timeout)}
    handler, root = "lambda_function.handler", FUNCTIONS / function
    found = lambda_rie.start(name, handler, root, own, port, settings.host, output=subprocess.PIPE)
    shown_lines(found.process, invocation_bookkeeping)
    return found


def _front(function: str, port: int, urls: list[str], settings: LocalSettings) -> list[str]:
    """The command of a Function URL's stand-in on ``port`` for these emulators."""
    return lambda_front.command(urls, f"{settings.host}:{port}", LAMBDA_TIMEOUTS[function])


def _start_lambda(
    settings: LocalSettings,
    env: dict[str, str],
    children: list[processes.Process],
    observed: observability.Observed | None,
) -> None:
    """Both functions as on AWS Lambda: each handler under the Runtime Interface Emulator,
    HTTP through a Function URL's stand-in, the bucket's notifications invoked by the relay
    in ``events`` as an event source mapping does (on the emulator at the event port).
    Each child joins ``children`` as it starts, so a failure midway stops those started."""
    say(f"AWS Lambda's Runtime Interface Emulator: {lambda_rie.binary()}")
    urls: dict[str, list[str]] = {"predict": [], "train": []}
    serving = {**env, "OMP_NUM_THREADS": "1", **_otel(observed, "predict")}
    for i in range(PREDICT_EMULATORS):
        found = _emulator(f"predict-rie-{i + 1}", "predict", serving, settings)
        children.append(found.process)
        urls["predict"].append(found.url)
    found = _emulator("train-rie", "train", {**env, **_otel(observed, "train")}, settings)
    children.append(found.process)
    urls["train"].append(found.url)
    # the queue's deliveries: the relay invokes this one at the event port
    events = {**env, **_otel(observed, "train-events")}
    queue = _emulator("train-events", "train", events, settings, settings.event_port)
    children.append(queue.process)
    for name, port in (("predict", settings.predict_port), ("train", settings.train_port)):
        children.append(spawn(name, _front(name, port, urls[name], settings), env))
    children.append(spawn("events", [sys.executable, "-m", "milkprice.local.cli", "events"], env))


def _announce(
    settings: LocalSettings, state: Path, observed: observability.Observed | None
) -> None:
    base = f"http://{settings.host}:{settings.predict_port}"
    example = example_request(settings, state)  # written before "ready." is said
    say(f"ready. predict: {base}/   train: http://{settings.host}:{settings.train_port}/")
    say(f"try:  curl {base}/forecast")
    say(f"      curl -X POST {base}/predict -H 'Content-Type: application/json' -d @{example}")
    for line in observed.lines() if observed else []:
        say(line)
    say(STOP_HINT)


def _observe(settings: LocalSettings, state: Path, env: dict[str, str]) -> observability.Observed:
    """Prometheus and Phoenix, started first: Phoenix takes a while, the bucket meanwhile."""
    observed = observability.start(settings, state, env)
    say(
        f"starting Prometheus on {observed.prometheus_url} and Phoenix on "
        f"{observed.phoenix_url} (logs: {state / 'prometheus'}, {state / 'phoenix'})"
    )
    return observed


def _serve(
    settings: LocalSettings,
    state: Path,
    watched: list[processes.Process],
    observed: observability.Observed | None,
    stop: Stopper,
) -> None:
    """Wait for the first model, say where to look, then watch until a stop is asked."""
    if wait_ready(settings, watched, stop.event.is_set):
        _announce(settings, state, observed)
        while not stop.event.wait(1.0):
            dead = [c.name for c in watched if not c.alive()]
            if dead:
                raise StackError(f"{', '.join(dead)} stopped unexpectedly; see its lines above")
    elif not stop.event.is_set():
        raise StackError("no model became ready; see the lines above")


def up(settings: LocalSettings, data_dir: str | None = None, observe: bool = False) -> int:
    """The whole stack until Ctrl-C or SIGTERM; then nothing of it is left running.

    ``observe`` adds Prometheus and Phoenix (``observability``); the functions start once
    Phoenix answers, so that not even the first training's spans are lost."""
    if settings.runtime == "lambda" and settings.cloud != "aws":
        raise StackError("MILKPRICE_RUNTIME=lambda runs on AWS's S3: set MILKPRICE_CLOUD=aws")
    state = settings.state_path().resolve()
    handle = lock(state)
    check_ports(settings)
    stop = Stopper()
    env = _environment(settings, state)
    os.environ.update(object_stores.client_env(settings))
    children: list[processes.Process] = []
    observed: observability.Observed | None = None
    try:
        observed = _observe(settings, state, env) if observe else None
        children.append(_start_bucket(settings, state))
        _prepare_bucket(settings, data_dir)
        if observed:
            observed.wait(stop.event.is_set)
        if settings.runtime == "lambda" and not stop.event.is_set():
            _start_lambda(settings, env, children, observed)
        elif not stop.event.is_set():
            children += _start_functions(settings, env, observed)
        _serve(settings, state, children + (observed.children if observed else []), observed, stop)
        say("stopping")
        return 0
    finally:
        stop_all(children, settings, stop.why)
        # after the functions: the spans they send as they stop still land
        processes.stop(observed.children if observed else [])
        handle.close()
