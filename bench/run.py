"""``make bench``: serving, cold start, training, freshness and soak of the milk price functions.

Every figure stands beside a reference measured in the same run, because the machine is shared
and noisy: the serving cases beside a bare Functions Framework function (the ceiling), the cold
start beside a scikit-learn + pandas reference function, the freshness beside the training's
own time. bench/README.md says what each case does and why the servers run as they do.

BENCH_SECONDS (default 10) is the length of each serving case; below 10 it is a smoke run
(2 cold starts, a 6-month backtest). Results go to bench/results.json (BENCH_RESULTS
overrides), the table to stdout, progress to stderr. The exit status is 0 even when a target
is missed and 1 when a case errors (a non-200 or wrong answer, a process that does not start).
"""

from __future__ import annotations

import compileall
import contextlib
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: import milkprice from this checkout
    sys.path.insert(0, str(ROOT))

from bench import clouds, lambdas, telemetry  # noqa: E402
from milkprice import contract, store  # noqa: E402
from milkprice import http_client as http  # noqa: E402
from milkprice.local import processes, sample  # noqa: E402
from milkprice.local.object_stores import fake_gcs  # noqa: E402
from milkprice.settings import Settings  # noqa: E402
from milkprice.train.features import LEGACY_FEATURES as LEGACY  # noqa: E402

BENCH = ROOT / "bench"
PREDICT = ROOT / "functions" / "predict" / "main.py"
TRAIN = ROOT / "functions" / "train" / "main.py"
LEGACY_NAMES = list(LEGACY)
SHARED = ROOT.parent / "shared" / "data" / "milk-price-chile"
FF = str(Path(sys.executable).parent / "functions-framework")
HOST = "127.0.0.1"
WARMUP = 2
BUCKET = "milk-price-bench"
V2 = "/v2/models/legacy/infer"
BINARY_HEADER = "Inference-Header-Content-Length"
# Exactly what `make up` gives predict (milkprice/stack.py); bench/README.md says why.
SERVER_ENV = {"WORKERS": "1", "THREADS": "8", "OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Config:
    """One run's settings, read from the environment when the run starts (not on import)."""

    seconds: int  # the length of each serving case
    results: Path
    started: float  # monotonic clock at the start: progress lines and the wall time count from it
    only: str = ""  # BENCH_ONLY: one section alone (cold: every cloud's cold start; telemetry)
    cold_rounds: int = 0  # BENCH_COLD_RUNS: cold starts of each function (0: the mode's own)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        return cls(
            seconds=max(1, int(float(environ.get("BENCH_SECONDS") or 10))),
            results=Path(environ.get("BENCH_RESULTS") or BENCH / "results.json"),
            started=time.monotonic(),
            only=(environ.get("BENCH_ONLY") or "").strip().lower(),
            cold_rounds=int(environ.get("BENCH_COLD_RUNS") or 0),
        )

    @property
    def smoke(self) -> bool:
        return self.seconds < 10

    @property
    def soak(self) -> int:
        return self.seconds * 6

    @property
    def cold_runs(self) -> int:
        return self.cold_rounds or (2 if self.smoke else 5)

    @property
    def months(self) -> int:
        """The backtest of the training measured (freshness and training)."""
        return 6 if self.smoke else 24

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:5.0f} s] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A case errored: the bench says what and exits non-zero."""


# ---------------------------------------------------------------- processes and HTTP


class Processes:
    """Every child of the bench: a clean env copy each, output to a log file, all stopped."""

    def __init__(self, tmp: Path, gcs_url: str) -> None:
        self.tmp = tmp
        self.gcs_url = gcs_url
        self.logs: dict[int, Path] = {}
        self.names: dict[int, str] = {}
        self.running: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """os.environ without anything that configures the project, the servers or BLAS."""
        skip = ("MILKPRICE_", "BENCH_", "OMP_", "OPENBLAS_", "MKL_", "GUNICORN_", "OTEL_")
        own = ("WORKERS", "THREADS", "PORT", "HOST", "DEBUG", "STORAGE_EMULATOR_HOST")
        env = {k: v for k, v in os.environ.items() if not k.startswith(skip) and k not in own}
        env.update(PYTHONUNBUFFERED="1", STORAGE_EMULATOR_HOST=self.gcs_url)
        env.update(MILKPRICE_BUCKET=BUCKET, **extra)
        return env

    def start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}-{len(self.logs)}.log"
        proc = processes.start(name, args, self.env(**extra), cwd=ROOT, log=log).popen
        self.logs[proc.pid] = log
        self.names[proc.pid] = name
        self.running.append(proc)
        return proc

    def function(
        self, target: str, source: Path, port: int, signature: str = "http", **extra: str
    ) -> subprocess.Popen[bytes]:
        """A Functions Framework function, started the way `make up` starts one."""
        args = [FF, "--target", target, "--source", str(source), "--signature-type", signature]
        return self.start(target, [*args, "--host", HOST, "--port", str(port)], **extra)

    def log(self, proc: subprocess.Popen[bytes], lines: int = 20) -> str:
        text = self.logs[proc.pid].read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """The process and its whole group (a server's workers too)."""
        processes.stop([processes.Process(self.names[proc.pid], proc)])
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def call(
    url: str, body: bytes | None = None, timeout: float = 30, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of a GET, or of a POST when there is a body; 0: no answer."""
    sent = {"Content-Type": "application/json"} if body is not None else {}
    answer = http.request(url, body, {**sent, **(headers or {})}, timeout)
    return answer.status, answer.headers, answer.body


def wait_for(
    procs: Processes, proc: subprocess.Popen[bytes], ready: Callable[[], bool], limit: float = 60
) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None:
            raise BenchError(
                f"{procs.names[proc.pid]} exited ({proc.returncode}):\n{procs.log(proc)}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"{procs.names[proc.pid]} not ready in {limit:.0f} s:\n{procs.log(proc)}"
            )
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def worker_rss_kb(master: int) -> int:
    """VmRSS of the gunicorn worker, the child of the functions-framework process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != master:
                continue
            found = re.search(r"VmRSS:\s+(\d+)", (stat.parent / "status").read_text())
        except (OSError, IndexError, ValueError):
            continue
        if found:
            return int(found[1])
    raise BenchError(f"no gunicorn worker under pid {master}")


# ---------------------------------------------------------------- wrk


def ensure_wrk(config: Config) -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise BenchError("wrk is missing and installing it needs root: apt-get install -y wrk")
    config.say("installing wrk: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    if not shutil.which("wrk"):
        raise BenchError("apt-get could not install wrk")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@contextlib.contextmanager
def on_cpus(cpus: set[int] | None) -> Iterator[None]:
    """Processes started inside run on ``cpus`` only (None: wherever the system puts them):
    a child inherits the CPUs of the thread that starts it, this one, set here meanwhile."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def wrk(
    url: str,
    body: Path,
    expect: Path,
    conc: int,
    seconds: int,
    headers: Mapping[str, str] | None = None,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    """One wrk run (on ``cpus``: see :func:`on_cpus`): req/s, p50, p99 and errors (socket
    errors, non-200s and wrong answers)."""
    args = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--latency", "-s", str(BENCH / "wrk.lua")]
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_EXPECT": str(expect)}
    env["BENCH_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in (headers or {}).items())
    with on_cpus(cpus):
        done = subprocess.run(
            [*args, url], env=env, capture_output=True, text=True, timeout=seconds + 60
        )
    out = done.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    checked = re.search(r"^mismatches: (\d+)", out, re.M)
    latency = {
        m[1]: float(m[2]) * UNITS[m[3]]
        for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    }
    if done.returncode != 0 or not rate or not checked or len(latency) != 2:
        raise BenchError(f"wrk failed on {url}:\n{out}{done.stderr}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(checked[1]) + (sum(map(int, sockets.groups())) if sockets else 0)
    result: dict[str, Any] = {
        "req_per_s": float(rate[1]),
        "p50_ms": round(latency["50"], 3),
        "p99_ms": round(latency["99"], 3),
        "errors": errors,
    }
    if errors:
        result["error_lines"] = [
            line.strip() for line in out.splitlines() if line.startswith(("mismatch:", "  Socket"))
        ]
    return result


# ---------------------------------------------------------------- the model and the cases


def raw_data() -> tuple[str, dict[str, bytes]]:
    """The real data set when it sits next to the repository, else the generated sample."""
    if all((SHARED / n).is_file() for n in store.RAW_FILES):
        return "real", {n: (SHARED / n).read_bytes() for n in store.RAW_FILES}
    return "sample", sample.sample_files()


def upload(settings: Settings, files: dict[str, bytes]) -> None:
    for name, payload in files.items():
        store.write(settings, store.RAW_PREFIX + name, payload, "text/csv")


@dataclass
class Case:
    name: str
    path: str
    body: bytes
    concurrency: int
    prices: list[float]  # what the model in the bucket gives for these rows
    headers: dict[str, str] = field(default_factory=dict)  # beside Content-Type: JSON

    def correct(self, answer: bytes, rtol: float = 1e-9, length: str | None = None) -> bool:
        """Whether ``answer`` holds the prices; ``length``: its Inference-Header-Content-Length
        (the prices are bytes after the JSON)."""
        try:
            doc = json.loads(answer if length is None else answer[: int(length)])
            if self.path.startswith("/v2/"):
                out = doc["outputs"][0]
                if out["name"] != "price" or out["shape"] != [len(self.prices), 1]:
                    return False
                doc = out["data"] if length is None else np.frombuffer(answer[int(length) :], "<f8")
            got = np.asarray(doc, dtype=np.float64)
        except (ValueError, TypeError, KeyError, IndexError):
            return False
        return got.shape == (len(self.prices),) and bool(np.allclose(got, self.prices, rtol=rtol))


def binary_tensor(X: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A V2 infer body of ``X`` as an FP64 tensor in binary, the output asked for in binary too,
    as tritonclient sends it by default; and the headers it goes with."""
    data = np.ascontiguousarray(X, dtype="<f8").tobytes()
    tensor: dict[str, Any] = {"name": "X", "shape": list(X.shape), "datatype": "FP64"}
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    headers = {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(header))}
    return header + data, headers


def legacy_rows(n: int) -> np.ndarray:
    """``n`` rows of the 141 legacy features: the old system's own rows, cycled, if present."""
    source = SHARED / "legacy-features" / "X.csv"
    if source.is_file():
        with source.open() as f:
            reader = csv.reader(f)
            header = next(reader)
            table = np.array([[float(v) for v in r] for r in reader])
        order = [header.index(name) for name in LEGACY_NAMES]
        base = table[:, order]
    else:
        base = np.random.default_rng(1).uniform(1.0, 300.0, (74, len(LEGACY_NAMES)))
    return np.asarray(base[np.arange(n) % len(base)], dtype=np.float64)


def cases(settings: Settings) -> tuple[list[Case], list[str]]:
    """The four serving cases.

    One row is the forecast model's next-month row. The 1000 rows are in the old clients'
    format, every one of the 141 legacy features (the rows the old system built when
    ../shared has them, else synthetic), so the JSON is as heavy as old clients send and the
    legacy model scores them; the V2 tensor carries the same rows in the legacy model's
    feature order. The expected prices come from the ONNX files in the bucket.
    """
    import onnxruntime as ort

    manifest, entry, graph = contract.served_artifact(settings, "forecast", "onnx")
    features = list(entry.features)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    row = np.array([[manifest.next.features[f] for f in features]], dtype=np.float64)

    def prices(X: np.ndarray, model: Any = session) -> list[float]:
        return [float(y) for y in np.ravel(model.run(None, {"X": X})[0])]

    def rows(X: np.ndarray, names: list[str] = features) -> str:
        return json.dumps({"data": [dict(zip(names, map(float, r), strict=True)) for r in X]})

    _, legacy_entry, legacy_graph = contract.served_artifact(settings, "legacy", "onnx")
    legacy = ort.InferenceSession(legacy_graph, providers=["CPUExecutionProvider"])
    old = legacy_rows(1000)
    used = [LEGACY_NAMES.index(f) for f in legacy_entry.features]
    tensor_rows = old[:, used]
    shape: list[int] = list(tensor_rows.shape)
    tensor = {"name": "X", "shape": shape, "datatype": "FP64", "data": tensor_rows.ravel().tolist()}
    v2 = json.dumps({"inputs": [tensor]}).encode()
    binary, headers = binary_tensor(tensor_rows)
    one, thousand = prices(row), prices(tensor_rows, legacy)
    return [
        Case("1 row /predict c=1", "/predict", rows(row).encode(), 1, one),
        Case("1 row /predict c=8", "/predict", rows(row).encode(), 8, one),
        Case("1000 rows /predict c=1", "/predict", rows(old, LEGACY_NAMES).encode(), 1, thousand),
        Case("1000 rows V2 tensor c=1", V2, v2, 1, thousand),
        Case("1000 rows V2 binary tensor c=1", V2, binary, 1, thousand, headers),
    ], features


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(
        self, procs: Processes, settings: Settings, plan: list[Case], config: Config
    ) -> None:
        self.procs = procs
        self.settings = settings
        self.plan = plan
        self.config = config
        self.say = config.say
        self.results: dict[str, Any] = {"cases": {}}
        self.errors: list[str] = []

    def file(self, name: str, data: bytes) -> Path:
        path = self.procs.tmp / name
        path.write_bytes(data)
        return path

    def start(self, name: str, port: int, **extra: str) -> subprocess.Popen[bytes]:
        source = PREDICT if name == "predict" else BENCH / name / "main.py"
        return self.procs.function(name, source, port, **SERVER_ENV, **extra)

    def record(self, key: str, result: dict[str, Any]) -> None:
        self.results["cases"][key] = result
        if result["errors"]:
            self.errors.append(f"{key}: {result['errors']} errors: {result.get('error_lines')}")

    # ---- 1 and 5: serving, then the soak on the same predict process

    def serving(self) -> None:
        port = {"predict": processes.free_port(), "ceiling": processes.free_port()}
        url = {name: f"http://{HOST}:{p}" for name, p in port.items()}
        server = {name: self.start(name, p) for name, p in port.items()}
        health = url["predict"] + "/v2/health/ready"
        wait_for(self.procs, server["predict"], lambda: call(health)[0] == 200)
        wait_for(self.procs, server["ceiling"], lambda: call(url["ceiling"], b"{}")[0] == 200)
        for n, case in enumerate(self.plan):
            sent = self.file(f"body-{n}.json", case.body)
            for name in ("predict", "ceiling"):  # alternate: both see the same noise
                status, got_headers, answer = call(
                    url[name] + case.path, case.body, 30, case.headers
                )
                right = (
                    case.correct(answer, length=got_headers.get(BINARY_HEADER))
                    if name == "predict"
                    else answer.strip() == b"[0.0]"
                )
                if status != 200 or not right:
                    raise BenchError(f"{name} {case.name}: {status} {answer[:300]!r}")
                expect = self.file(f"expect-{n}-{name}.json", answer)
                seconds = self.config.seconds
                self.say(f"{name} {case.name}: {WARMUP} s warm-up, {seconds} s measured")
                target = (url[name] + case.path, sent, expect, case.concurrency)
                warm = wrk(*target, WARMUP, case.headers)
                got = wrk(*target, seconds, case.headers)
                got["errors"] += warm["errors"]
                self.record(f"{name} {case.name}", {"concurrency": case.concurrency, **got})
                self.say(
                    f"{name} {case.name}: {got['req_per_s']:.0f} req/s, p50 {got['p50_ms']} ms,"
                    f" p99 {got['p99_ms']} ms, {got['errors']} errors"
                )
        length = self.config.soak
        self.say(f"soak: {length} s at c=8 on 1 row /predict")
        pid = server["predict"].pid
        start_kb = worker_rss_kb(pid)
        sent, expect = self.procs.tmp / "body-0.json", self.procs.tmp / "expect-0-predict.json"
        soak = wrk(url["predict"] + "/predict", sent, expect, 8, length)
        end_kb = worker_rss_kb(pid)
        growth = round((end_kb - start_kb) / start_kb * 100, 2)
        soak.update(seconds=length, rss_start_kb=start_kb, rss_end_kb=end_kb, rss_growth_pct=growth)
        self.record("predict soak 1 row /predict c=8", {"concurrency": 8, **soak})
        self.say(
            f"soak: {soak['errors']} errors, worker RSS {start_kb} -> {end_kb} kB ({growth:+}%)"
        )
        for proc in server.values():
            self.procs.stop(proc)

    # ---- 2: cold start

    def cold_once(self, name: str, **extra: str) -> float:
        """Process start to the first correct prediction (the bare function: first 200)."""
        case = self.plan[0]
        port = processes.free_port()
        url = f"http://{HOST}:{port}" + ("/predict" if name == "predict" else "/")
        started = time.perf_counter()
        proc = self.start(name, port, **extra)
        try:
            last = "no answer"
            while proc.poll() is None and time.perf_counter() - started < 120:
                status, _, answer = call(url, case.body)
                if status == 200:
                    took = time.perf_counter() - started
                    if name != "ceiling" and not case.correct(answer, rtol=1e-6):
                        raise BenchError(f"{name} answered a wrong prediction: {answer[:300]!r}")
                    return took
                last = f"{status} {answer[:200]!r}"
                time.sleep(0.01)
            raise BenchError(f"{name} gave no correct answer ({last}):\n{self.procs.log(proc)}")
        finally:
            self.procs.stop(proc)

    def cold_start(self) -> None:
        runs: dict[str, list[float]] = {"predict": [], "ceiling": [], "reference": []}
        for i in range(self.config.cold_runs):
            for name, seconds in runs.items():
                seconds.append(round(self.cold_once(name), 3))
            got = ", ".join(f"{name} {s[-1]:.2f} s" for name, s in runs.items())
            self.say(f"cold start {i + 1}/{self.config.cold_runs}: {got}")
        self.results["cold_start"] = {
            name: {"median_s": round(statistics.median(s), 3), "runs_s": s}
            for name, s in runs.items()
        }

    def serve_one(self, case_name: str, extra: dict[str, str]) -> dict[str, float]:
        """req/s of one case on a predict started with ``extra`` and on the bare function."""
        [case] = [c for c in self.plan if c.name == case_name]
        port = {"predict": processes.free_port(), "ceiling": processes.free_port()}
        url = {name: f"http://{HOST}:{p}" for name, p in port.items()}
        server = {
            "predict": self.start("predict", port["predict"], **extra),
            "ceiling": self.start("ceiling", port["ceiling"]),
        }
        try:
            health = url["predict"] + "/v2/health/ready"
            wait_for(self.procs, server["predict"], lambda: call(health)[0] == 200)
            wait_for(self.procs, server["ceiling"], lambda: call(url["ceiling"], b"{}")[0] == 200)
            sent, found = self.file("cloud-body.json", case.body), {}
            for name in ("predict", "ceiling"):
                status, _, answer = call(url[name] + case.path, case.body)
                right = case.correct(answer) if name == "predict" else status == 200
                if status != 200 or not right:
                    raise BenchError(f"{name} {case.name} ({extra}): {status} {answer[:300]!r}")
                expect = self.file(f"cloud-expect-{name}.json", answer)
                for seconds in (WARMUP, self.config.seconds):  # the last one counts
                    got = wrk(url[name] + case.path, sent, expect, case.concurrency, seconds)
                if got["errors"]:
                    self.errors.append(f"{name} {case.name} ({extra}): {got['errors']} errors")
                found[name] = got["req_per_s"]
            return found
        finally:
            for proc in server.values():
                self.procs.stop(proc)

    def runs(self) -> list[str]:
        """The ids of the runs in the bucket."""
        return contract.run_ids(self.settings)

    # ---- 4 and 3: freshness through the real bridge and trigger, and that training run

    def freshness(self, raw: dict[str, bytes]) -> None:
        months = self.config.months
        state = self.procs.tmp / "events"
        state.mkdir()
        # The bridge has seen the raw generations the serving model was trained on.
        seen = dict(store.list_names(self.settings, store.RAW_PREFIX))
        (state / "bridge-state.json").write_text(json.dumps(seen))
        predict_port, train_port = processes.free_port(), processes.free_port()
        env = {
            "MILKPRICE_EVENT_URL": f"http://{HOST}:{train_port}/",
            # The scheduler's target: it fires at 03:00 only, so nothing needs to listen.
            "MILKPRICE_TRAIN_URL": f"http://{HOST}:{processes.free_port()}/",
            "MILKPRICE_RELOAD_SECONDS": "1",
            "MILKPRICE_STATE_DIR": str(state),
            "MILKPRICE_BACKTEST_MONTHS": str(months),
            # the full run has the 60-month second view; the smoke run has none
            "MILKPRICE_LONG_BACKTEST_MONTHS": "0" if self.config.smoke else "60",
        }
        predict = self.start("predict", predict_port, **env)
        train = self.procs.function("train_event", TRAIN, train_port, "cloudevent", **env)
        events = self.procs.start(
            "events", [sys.executable, "-m", "milkprice.local.cli", "events"], **env
        )
        base = f"http://{HOST}:{predict_port}"

        def serving() -> str:
            """The version GET /v2/models/forecast names, or '' before a model is loaded."""
            status, _, answer = call(base + "/v2/models/forecast", timeout=10)
            return str(json.loads(answer)["versions"][0]) if status == 200 else ""

        wait_for(self.procs, predict, lambda: bool(serving()))
        wait_for(self.procs, train, lambda: listening(train_port))
        log = self.procs.logs[events.pid]
        wait_for(self.procs, events, lambda: "bridge: watching" in log.read_text())
        new, took = self.upload_and_wait(raw, (predict, train, events), serving)
        found = contract.read_run(self.settings, new)
        if found is None or found.outcome != "promoted":
            raise BenchError(f"{new} is served but its run record says {found}")
        run = contract.to_builtins(found)
        # The new model answers for its own next-month row what its ONNX file says.
        [case, *_], _ = cases(self.settings)
        status, headers, answer = call(base + "/predict", case.body)
        if status != 200 or headers.get("X-Model-Version") != new or not case.correct(answer):
            raise BenchError(f"{new} answers {status} {headers.get('X-Model-Version')} {answer!r}")
        self.results["freshness"] = {"seconds": round(took, 3), "training_seconds": run["seconds"]}
        self.results["training"] = {
            "backtest_months": months,
            "data": self.results["data"],
            "seconds": run["seconds"],
            "timings": run["timings"],
            "run_id": run["run_id"],
        }
        self.say(
            f"freshness: {new} served {took:.1f} s after the upload; training {run['seconds']} s"
        )
        for proc in (events, train, predict):
            self.procs.stop(proc)

    def upload_and_wait(
        self,
        raw: dict[str, bytes],
        watched: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], subprocess.Popen[bytes]],
        serving: Callable[[], str],
    ) -> tuple[str, float]:
        """Upload the raw files again and poll until predict serves another version: that
        version and the seconds since the upload. A process that stops, a training that ends
        without promoting or 600 s without a new version end the case early."""
        old = serving()
        runs_before = set(self.runs())
        months = self.config.months
        self.say(
            f"freshness: uploading the raw files again ({months}-month backtest; serving {old})"
        )
        started = time.perf_counter()
        upload(self.settings, raw)
        new, polls = old, 0
        while new in (old, ""):
            for proc in watched:
                if proc.poll() is not None:
                    name = self.procs.names[proc.pid]
                    raise BenchError(f"{name} stopped:\n{self.procs.log(proc)}")
            polls += 1
            if polls % 20 == 0:  # every 2 s: did the training end without promoting?
                for run_id in set(self.runs()) - runs_before:
                    record = contract.read_run(self.settings, run_id)
                    if record and record.outcome in ("failed", "not_promoted"):
                        raise BenchError(f"the training ended {record.outcome}: {record.reason}")
            if time.perf_counter() - started > 600:
                raise BenchError(f"no new model served in 600 s:\n{self.procs.log(watched[1])}")
            time.sleep(0.1)
            new = serving()
        return new, time.perf_counter() - started


# ---------------------------------------------------------------- the report


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target: the value, the limit as text, and whether it is met."""
    c, cold = r["cases"], r["cold_start"]
    soak = c["predict soak 1 row /predict c=8"]

    def vs_ceiling(case: str) -> float:
        return c[f"predict {case}"]["req_per_s"] / c[f"ceiling {case}"]["req_per_s"]

    def p50_vs_ceiling(case: str) -> float:
        return c[f"predict {case}"]["p50_ms"] / c[f"ceiling {case}"]["p50_ms"]

    checks = {
        "1 row c=1 req/s": (vs_ceiling("1 row /predict c=1"), "≥ 0.70 x ceiling", 0.70, 1),
        "1 row c=1 p99": (c["predict 1 row /predict c=1"]["p99_ms"], "< 3 ms", 3, -1),
        "1 row c=8 req/s": (vs_ceiling("1 row /predict c=8"), "≥ 0.75 x ceiling", 0.75, 1),
        "1000 rows p50": (c["predict 1000 rows /predict c=1"]["p50_ms"], "≤ 25 ms", 25, 0),
        "V2 tensor p50": (c["predict 1000 rows V2 tensor c=1"]["p50_ms"], "≤ 12 ms", 12, 0),
        "V2 binary p50": (
            p50_vs_ceiling("1000 rows V2 binary tensor c=1"),
            "≤ 1.3 x ceiling",
            1.3,
            0,
        ),
        "cold start": (
            cold["predict"]["median_s"] / cold["reference"]["median_s"],
            "≤ 0.5 x reference",
            0.5,
            0,
        ),
        "soak errors": (soak["errors"], "0", 0, 0),
        "soak memory": (soak["rss_growth_pct"], "growth < 10 %", 10, -1),
        **(telemetry.targets(r["telemetry"]) if "telemetry" in r else {}),
    }
    # sense 1: at least the limit; 0: at most; -1: strictly below
    return {
        name: {
            "value": round(value, 3),
            "target": text,
            "pass": value >= limit
            if sense > 0
            else value <= limit
            if sense == 0
            else value < limit,
        }
        for name, (value, text, limit, sense) in checks.items()
    }


class Table:
    """The report's Markdown table: one row per measure, its reference and its target."""

    def __init__(self, targets: dict[str, Any]) -> None:
        self.targets = targets
        self.lines = [
            "| measure | predict | reference | ratio | target | result |",
            "| --- | ---: | ---: | ---: | --- | --- |",
        ]

    @staticmethod
    def num(x: float) -> str:
        return f"{x:,.0f}" if isinstance(x, int) or abs(x) >= 100 else f"{x:.2f}"

    def row(
        self, measure: str, mine: float, ref: float | None, ref_name: str, target: str = ""
    ) -> None:
        ratio = f"{mine / ref:.2f}" if ref else ""
        shown = f"{self.num(ref)} {ref_name}" if ref is not None else ref_name
        t = self.targets
        goal, result = (
            (t[target]["target"], "PASS" if t[target]["pass"] else "FAIL") if target else ("", "")
        )
        self.lines.append(
            f"| {measure} | {self.num(mine)} | {shown} | {ratio} | {goal} | {result} |"
        )


def table(r: dict[str, Any]) -> str:
    out = Table(r["targets"])
    _serving_rows(out, r)
    _training_rows(out, r)
    soak = r["cases"]["predict soak 1 row /predict c=8"]
    soak_ref = r["cases"]["predict 1 row /predict c=8"]["req_per_s"]
    row = out.row
    row(f"soak {soak['seconds']} s c=8: req/s", soak["req_per_s"], soak_ref, "(1 row c=8 case)")
    row("soak: errors", soak["errors"], None, "", "soak errors")
    end, start = soak["rss_end_kb"] / 1024, soak["rss_start_kb"] / 1024
    row("soak: worker RSS MB at the end", end, start, "(at the start)", "soak memory")
    return "\n".join(out.lines)


def _serving_rows(out: Table, r: dict[str, Any]) -> None:
    """The serving cases against the ceiling, cold start, telemetry, each cloud, Lambda."""
    c = r["cases"]
    goals = {
        "1 row /predict c=1": {"req_per_s": "1 row c=1 req/s", "p99_ms": "1 row c=1 p99"},
        "1 row /predict c=8": {"req_per_s": "1 row c=8 req/s"},
        "1000 rows /predict c=1": {"p50_ms": "1000 rows p50"},
        "1000 rows V2 tensor c=1": {"p50_ms": "V2 tensor p50"},
        "1000 rows V2 binary tensor c=1": {"p50_ms": "V2 binary p50"},
    }
    for case, goal in goals.items():
        for key, unit in (("req_per_s", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")):
            mine, ref = c[f"predict {case}"][key], c[f"ceiling {case}"][key]
            out.row(f"{case}: {unit}", mine, ref, "(ceiling)", goal.get(key, ""))
    cold = {name: v["median_s"] for name, v in r["cold_start"].items()}
    runs = len(r["cold_start"]["predict"]["runs_s"])
    label = f"cold start s, median of {runs}"
    out.row(label, cold["predict"], cold["reference"], "(scikit-learn reference)", "cold start")
    out.row(label, cold["predict"], cold["ceiling"], "(bare function)")
    for measure, mine, ref, ref_name, target in telemetry.rows(r.get("telemetry") or {}):
        out.row(measure, mine, ref, ref_name, target)
    for measure, mine, ref, ref_name in clouds.rows(r["clouds"]) + lambdas.rows(r["lambda"]):
        out.row(measure, mine, ref, ref_name)


def _training_rows(out: Table, r: dict[str, Any]) -> None:
    """Freshness against its training, and training by stage (those under 1% summed)."""
    fresh, train = r["freshness"], r["training"]
    out.row(
        "freshness: upload to serving s",
        fresh["seconds"],
        fresh["training_seconds"],
        "(its training)",
    )
    total = train["seconds"]
    label = f"training s, {train['backtest_months']}-month backtest, {train['data']} data"
    out.row(label, total, None, "")
    other = 0.0
    for stage, seconds in sorted(train["timings"].items(), key=lambda kv: -kv[1]):
        if seconds >= 0.01 * total:
            out.row(f"training stage {stage} s", seconds, total, "(whole run)")
        else:
            other += seconds
    out.row("training, the other stages s", other, total, "(whole run)")


def report(bench: Bench, config: Config) -> int:
    """Targets, results file and table; the exit status (1 when a case errored)."""
    r = bench.results
    r["targets"] = targets(r)
    r["errors"] = bench.errors
    r["wall_seconds"] = round(time.monotonic() - config.started, 1)
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_text(json.dumps(r, indent=2) + "\n")
    print(table(r))
    if config.smoke:
        print(
            f"\nSmoke run: {config.seconds} s per case, a {config.months}-month backtest;"
            " indicative only."
        )
    for error in bench.errors:
        config.say(f"ERROR {error}")
    config.say(f"done in {r['wall_seconds']} s; results in {config.results}")
    return 1 if bench.errors else 0


def cold_report(bench: Bench, config: Config) -> int:
    """``BENCH_ONLY=cold``: every cloud's cold start beside the bare function, nothing else."""
    r = bench.results
    r.update(mode="cold", cold_runs=config.cold_runs, server_env=SERVER_ENV)
    r["clouds"] = clouds.cold_only(bench)
    r["wall_seconds"] = round(time.monotonic() - config.started, 1)
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_text(json.dumps(r, indent=2) + "\n")
    print(clouds.cold_table(r["clouds"]))
    config.say(f"done in {r['wall_seconds']} s; results in {config.results}")
    return 0


def telemetry_report(bench: Bench, config: Config) -> int:
    """``BENCH_ONLY=telemetry``: what metrics and tracing cost 1-row serving, nothing else."""
    r = bench.results
    checks = telemetry.targets(r["telemetry"])
    r["targets"] = {k: {"value": round(v, 3), "target": t} for k, (v, t, _, _) in checks.items()}
    r["errors"] = bench.errors
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_text(json.dumps(r, indent=2) + "\n")
    for measure, mine, ref, ref_name, _ in telemetry.rows(r["telemetry"]):
        print(f"{measure}: {mine:,.0f} vs {ref:,.0f} {ref_name}: {mine / ref:.2f}")
    return 1 if bench.errors else 0


def compile_sources() -> None:
    """The checkout's modules compiled, as an image or a bundle installs them: cold starts
    would otherwise compile them every time (PYTHONDONTWRITEBYTECODE, or a read-only tree)."""
    for folder in ("milkprice", "functions", "bench"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def run(tmp: Path, config: Config) -> int:
    compile_sources()
    port = processes.free_port()
    gcs = fake_gcs.start(tmp / "gcs", port)
    gcs_url = fake_gcs.url(HOST, port)
    os.environ["STORAGE_EMULATOR_HOST"] = gcs_url  # for this process's own store calls
    procs = Processes(tmp, gcs_url)
    try:
        settings = Settings(bucket=BUCKET, backtest_months=6, long_backtest_months=0)
        store.ensure_bucket(settings)
        data, raw = raw_data()
        upload(settings, raw)
        config.say(f"training the serving model on the {data} data (6-month backtest)")
        from milkprice.train import runner

        record = runner.run(settings, "http")
        if record.outcome != "promoted":
            raise BenchError(f"the serving model was not promoted: {record.reason}")
        plan, features = cases(settings)
        bench = Bench(procs, settings, plan, config)
        r = bench.results
        if config.only == "cold":
            return cold_report(bench, config)
        if config.only == "telemetry":
            r["telemetry"] = telemetry.run(bench)
            return telemetry_report(bench, config)
        mode = "smoke" if config.smoke else "full"
        r.update(mode=mode, seconds_per_case=config.seconds, warmup_s=WARMUP)
        r.update(data=data, cpus=os.cpu_count(), server_env=SERVER_ENV, features=features)
        if not PREDICT.is_file():
            raise BenchError(f"{PREDICT.relative_to(ROOT)} does not exist yet")
        bench.serving()
        r["telemetry"] = telemetry.run(bench)
        bench.cold_start()
        r["clouds"] = clouds.run(bench)
        r["lambda"] = lambdas.run(bench)
        bench.freshness(raw)
        return report(bench, config)
    finally:
        procs.stop_all()
        fake_gcs.stop(gcs)


def main() -> int:
    config = Config.from_env(os.environ)
    config.say(f"{'smoke' if config.smoke else 'full'} run, {config.seconds} s per serving case")
    processes.unwind_on_sigterm()  # every child is still stopped
    tmp = Path(tempfile.mkdtemp(prefix="milkprice-bench-"))
    try:
        if config.only not in ("", "cold", "telemetry"):
            raise BenchError(
                f"BENCH_ONLY={config.only!r}: the sections of their own are cold and telemetry"
            )
        if config.only != "cold":
            ensure_wrk(config)
        return run(tmp, config)
    except BenchError as exc:
        config.say(f"ERROR {exc}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
