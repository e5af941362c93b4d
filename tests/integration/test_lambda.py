"""Both functions as deployed on AWS Lambda, under the real Runtime Interface Emulator and the
Python runtime interface client, against the local S3 (moto):

- the predict zip of ``make bundle CLOUD=aws RUNTIME=lambda``, unzipped into a clean folder and
  run on Lambda's Python, answers through a Function URL's stand-in exactly as the HTTP
  function answers on the same bucket: every route, HEAD, query strings, repeated headers,
  binary bodies both ways, bodies up to Lambda's limit (and a 413 past it);
- an S3 upload retrains through the queue, invoked as Lambda's event source mapping invokes;
  a failed item of a batch is reported in batchItemFailures and comes back alone;
- stopping an emulator leaves none of its processes, the runtime it started included, even in
  the middle of an invocation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from milkprice import contract, store
from milkprice.local import lambda_front, lambda_rie, object_stores, processes, s3_queue
from milkprice.settings import LocalSettings
from tests.support import clouds, lambdas
from tests.support.buckets import manifest, new_settings, promote, upload
from tests.support.paths import ROOT
from tests.support.rows import next_row, perturbed
from tests.support.servers import Function, env_for
from tests.support.stack import Stack, held_ports

pytestmark = pytest.mark.slow

bundle = lambdas.bundle
HOST = ("Host", "milk-price.example")
JSON = ("Content-Type", "application/json")
LOADED = re.compile(rb"loaded here \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# the answer headers the comparison holds equal (the servers' own Date and Server aside)
COMPARED = (
    "content-type",
    "content-length",
    "x-model-version",
    "etag",
    "cache-control",
    "allow",
    "retry-after",
    "inference-header-content-length",
)


@pytest.fixture
def moto(
    tmp_path: Path, trained_sample: tuple[LocalSettings, dict[str, Any]]
) -> Iterator[tuple[LocalSettings, dict[str, str]]]:
    """The local S3 with its own bucket, the sample-trained model promoted in it."""
    version, files = object_stores.export_version(trained_sample[0])
    proc, env = clouds.start("aws", tmp_path / "moto")
    try:
        clouds.use("aws", env)
        settings = new_settings(cloud="aws", backtest_months=6)
        promote(settings, object_stores.import_version(settings, version, files))
        yield settings, env
    finally:
        processes.stop([proc])
        store.reset()


def function_env(settings: LocalSettings, store_env: dict[str, str], name: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        **store_env,
        "MILKPRICE_CLOUD": "aws",
        "MILKPRICE_BUCKET": settings.bucket,
        "MILKPRICE_BACKTEST_MONTHS": "6",
        "MILKPRICE_LONG_BACKTEST_MONTHS": "0",
        "MILKPRICE_CANDIDATES": settings.candidates,
        "MILKPRICE_RELOAD_SECONDS": "0.3",
        **lambda_rie.function_env(name, 900),
    }


# ---------------------------------------------------------------- the predict zip


def _rows(doc: dict[str, Any], size: int) -> bytes:
    """A /predict body of forecast rows of about ``size`` bytes."""
    row = json.dumps(next_row(doc)).encode()
    return json.dumps({"data": perturbed(next_row(doc), max(1, size // len(row)), 5)}).encode()


def _binary_infer(doc: dict[str, Any]) -> tuple[bytes, int]:
    """A V2 infer body as tritonclient sends it by default: binary tensors after the JSON."""
    features = doc["models"]["forecast"]["features"]
    rows = perturbed(next_row(doc), 4, seed=2)
    X = np.array([[r[f] for f in features] for r in rows], dtype=np.float64)
    tensor = triton.InferInput("X", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor])
    return bytes(body), int(json_size)


def _cases(doc: dict[str, Any]) -> list[tuple[str, str, list[tuple[str, str]], bytes | None]]:
    legacy = doc["models"]["legacy"]["features"]
    rng = np.random.default_rng(4)
    legacy_rows = [dict(zip(legacy, rng.uniform(1.0, 300.0, len(legacy)), strict=True))]
    infer, json_size = _binary_infer(doc)
    binary = [("Content-Type", "application/octet-stream")]
    binary += [("Inference-Header-Content-Length", str(json_size))]
    forwarded = [("X-Forwarded-Prefix", "/a"), ("X-Forwarded-Prefix", "/b")]  # repeated
    v2_json = {"inputs": [{"name": "X", "shape": [1, len(doc["models"]["forecast"]["features"])]}]}
    v2_json["inputs"][0] |= {"datatype": "FP64", "data": list(next_row(doc).values())}
    return [
        ("GET", "/", [HOST, *forwarded], None),
        ("HEAD", "/", [HOST], None),
        ("GET", "/forecast", [HOST], None),
        ("HEAD", "/forecast", [HOST], None),
        ("GET", "/forecast?months=3&months=5", [HOST], None),
        ("GET", "/forecast?months=99", [HOST], None),
        ("POST", "/predict", [HOST, JSON], _rows(doc, 2000)),
        ("POST", "/predict", [HOST, JSON], json.dumps({"data": legacy_rows}).encode()),
        ("POST", "/predict", [HOST, JSON], b'{"data": [{"not": "a row"}'),
        ("POST", "/predict", [HOST, JSON], _rows(doc, 5_500_000)),  # near Lambda's 6 MB
        ("GET", "/backtest.png", [HOST], None),
        ("GET", "/openapi.json", [HOST], None),
        ("GET", "/v2/health/ready", [HOST], None),
        ("GET", "/v2/models/forecast", [HOST], None),
        ("POST", "/v2/models/forecast/infer", [HOST, JSON], json.dumps(v2_json).encode()),
        ("POST", "/v2/models/forecast/infer", [HOST, *binary], infer),
        ("DELETE", "/predict", [HOST], None),
        ("GET", "/no/such/route", [HOST], None),
    ]


def _deterministic(body: bytes) -> bytes:
    """The answer without the one thing each process has of its own: when it loaded the model
    (the landing page says so)."""
    return LOADED.sub(b"loaded here (time)", body)


def _same(front: int, served: int, case: tuple[Any, ...]) -> lambdas.Reply:
    method, path, headers, body = case
    ours = lambdas.exchange(front, method, path, headers, body)
    theirs = lambdas.exchange(served, method, path, headers, body)
    what = f"{method} {path}"
    assert ours.status == theirs.status, (what, ours.status, theirs.status, ours.body[:300])
    mine, other = _deterministic(ours.body), _deterministic(theirs.body)
    at = next((i for i, (a, b) in enumerate(zip(mine, other, strict=False)) if a != b), None)
    around = slice(max(0, (at or 0) - 150), (at or 0) + 150)
    assert mine == other, (what, at, mine[around], other[around])
    for name in COMPARED:
        assert ours.headers.get(name) == theirs.headers.get(name), (what, name)
    return ours


@pytest.mark.long  # builds both zips from the lock: over a minute of installing on two cores
def test_the_predict_zip_answers_as_the_http_function(
    moto: tuple[LocalSettings, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, store_env = moto
    python, release = lambdas.lambda_python()
    if release != bundle.LAMBDA_PYTHON:
        with capsys.disabled():
            print(f"\nno Python {bundle.LAMBDA_PYTHON} here: the zip is built for {release}")
    layer = bundle.lambda_layer(tmp_path / "dist", python=release)
    package = bundle.lambda_zip("predict", tmp_path / "dist", release, layers=layer.unzipped)
    assert package.path is not None and layer.path is not None
    # each a direct upload; together within what Lambda unzips
    assert max(package.zipped, layer.zipped) <= bundle.UPLOAD_LIMIT
    assert package.unzipped + layer.unzipped <= bundle.UNZIPPED_LIMIT
    task, opt = tmp_path / "task", tmp_path / "opt"  # clean folders, as /var/task and /opt
    with zipfile.ZipFile(package.path) as z:
        z.extractall(task)
    with zipfile.ZipFile(layer.path) as z:
        z.extractall(opt)
    assert not (task / "milkprice" / "train").exists() and (task / "onnxruntime").is_dir()
    assert not (task / "boto3").exists() and (opt / "python" / "botocore").is_dir()
    runtime = lambdas.runtime_client(tmp_path / "runtime", release)
    env = function_env(settings, store_env, "milk-price-predict")
    # Lambda's order: the function, then its layers' python/, then the runtime's own folder
    env |= {"PYTHONPATH": f"{opt / 'python'}:{runtime}", "PYTHONNOUSERSITE": "1"}
    rie = lambda_rie.start(
        "predict-zip", "lambda_function.handler", task, env, python=python, log=tmp_path / "rie"
    )
    front, base = lambda_front.start("front", [rie.url], os.environ, log=tmp_path / "front")
    served = Function(
        "predict",
        "predict",
        env_for(settings, "", tmp_path / "ff", MILKPRICE_CLOUD="aws", **store_env),
    )
    try:
        port = int(base.rsplit(":", 1)[1])
        doc = manifest(settings)
        for case in _cases(doc):
            _same(port, served.port, case)
        chart = lambdas.exchange(port, "GET", "/backtest.png", [HOST])
        assert chart.body.startswith(b"\x89PNG") and chart.headers["etag"]
        again = ("GET", "/backtest.png", [HOST, ("If-None-Match", chart.headers["etag"])], None)
        assert _same(port, served.port, again).status == 304
        # past Lambda's 6 MB an invocation is refused, where the HTTP function takes 10 MB
        big = lambdas.exchange(port, "POST", "/predict", [HOST, JSON], _rows(doc, 6_400_000))
        assert big.status == 413 and "6291456" in big.body.decode()
        # tritonclient with its defaults, binary tensors both ways, through the front
        client = triton.InferenceServerClient(base.removeprefix("http://"))
        features = doc["models"]["forecast"]["features"]
        X = np.array([[r[f] for f in features] for r in perturbed(next_row(doc), 3, 7)])
        tensor = triton.InferInput("X", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X)
        ours = client.infer("forecast", [tensor]).as_numpy("price")
        theirs = triton.InferenceServerClient(f"127.0.0.1:{served.port}").infer(
            "forecast", [tensor]
        )
        assert ours is not None and np.array_equal(ours, theirs.as_numpy("price"))
    finally:
        served.stop()
        processes.stop([front, rie.process])


# ---------------------------------------------------------------- the train handler


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[tuple[LocalSettings, dict[str, str], int]]:
    """The local S3 with an empty bucket of its own; its variables and port."""
    proc, env = clouds.start("aws", tmp_path / "moto")
    try:
        clouds.use("aws", env)
        settings = new_settings(cloud="aws", backtest_months=6)
        yield settings, env, int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    finally:
        processes.stop([proc])
        store.reset()


def _put(settings: LocalSettings, name: str, data: bytes) -> None:
    """An upload with boto3, as a user makes it: S3 notifies the queue itself."""
    import boto3

    boto3.client("s3").put_object(Bucket=settings.bucket, Key=name, Body=data)


def _step(relay: s3_queue.QueueRelay, timeout: float = 60) -> None:
    """Deliver the next batch, once one is in the queue."""
    deadline = time.monotonic() + timeout
    while relay.step() == -1:
        assert time.monotonic() < deadline, "nothing came from the queue"


def _train_emulator(
    settings: LocalSettings, store_env: dict[str, str], tmp: Path, **extra: str
) -> lambda_rie.Emulator:
    env = function_env(settings, store_env, "milk-price-train") | extra
    root = ROOT / "functions" / "train"
    return lambda_rie.start("train", "lambda_function.handler", root, env, log=tmp / "rie.log")


def test_uploads_retrain_through_the_queue_and_a_failed_item_comes_back_alone(
    bucket: tuple[LocalSettings, dict[str, str], int], tmp_path: Path, sample_raw: dict[str, bytes]
) -> None:
    settings, store_env, port = bucket
    link = lambdas.Link(port)  # the function's way to the store, which the test can cut
    rie = _train_emulator(settings, store_env, tmp_path, AWS_ENDPOINT_URL=link.url)
    try:
        relay = s3_queue.QueueRelay(settings, rie.url, invoke=True)
        _step(relay)  # S3's test event, sent when the queue was subscribed: nothing to train
        assert relay.reported == [[]] and contract.read_pointer(settings) is None
        for name, data in sample_raw.items():
            _put(settings, store.RAW_PREFIX + name, data)
        _step(relay)
        assert len(relay.batches[-1]) == 3 and relay.reported[-1] == []
        first = contract.read_pointer(settings)
        assert first is not None, (tmp_path / "rie.log").read_text()[-3000:]

        link.cut()  # the store unreachable from the function: a failure a retry can help
        changed = sample_raw["precio_leche.csv"] + b"\n"
        _put(settings, store.RAW_PREFIX + "precio_leche.csv", changed)
        _put(settings, store.RAW_PREFIX + "notes.txt", b"not a raw file")
        _step(relay)
        batch, failed = relay.batches[-1], relay.reported[-1]
        assert len(batch) == 2 and len(failed) == 1, (batch, failed)
        assert contract.read_pointer(settings) == first

        link.mend()
        _step(relay)  # the failed message alone; the other was deleted
        assert relay.batches[-1] == failed and relay.reported[-1] == []
        second = contract.read_pointer(settings)
        assert second is not None and second[0].version != first[0].version
        record = contract.read_run(settings, second[0].run_id)
        assert record is not None and record.trigger == "upload"
        blob = store.read(settings, store.RAW_PREFIX + "precio_leche.csv")
        assert blob is not None and blob.data == changed
        assert record.inputs[store.RAW_PREFIX + "precio_leche.csv"].token == blob.token
    finally:
        link.cut()
        rie.stop()


def _alive(pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.add(pid)
    return found


def test_stopping_an_emulator_mid_invocation_leaves_none_of_its_processes(
    bucket: tuple[LocalSettings, dict[str, str], int], tmp_path: Path, sample_raw: dict[str, bytes]
) -> None:
    """The emulator runs its runtime in a process group of the runtime's own, and on SIGTERM
    ends it itself; an emulator that cannot (here: stopped with SIGSTOP, so it only gets the
    SIGKILL after the grace) must not leave the runtime training on, out of every group."""
    settings, store_env, _ = bucket
    upload(settings, sample_raw)
    rie = _train_emulator(settings, store_env, tmp_path)
    answers: list[int] = []
    invoking = threading.Thread(
        target=lambda: answers.append(rie.invoke({"trigger": "http"}, timeout=600).status)
    )
    invoking.start()
    try:
        deadline = time.monotonic() + 120
        while not any(r.outcome == "running" for r in contract.list_runs(settings)):
            assert time.monotonic() < deadline, (tmp_path / "rie.log").read_text()[-3000:]
            time.sleep(0.2)
        children = lambdas.parents()
        runtime = {pid for pid, parent in children.items() if parent == rie.process.pid}
        assert runtime and all(os.getpgid(p) != rie.process.pid for p in runtime), (
            "the emulator starts its runtime in a process group of the runtime's own"
        )
        os.kill(rie.process.pid, signal.SIGSTOP)
    finally:
        processes.stop([rie.process], grace=1.0)
    invoking.join(timeout=30)
    assert _alive(runtime | {rie.process.pid}) == set(), "left running after the stop"
    assert answers == [0]  # the invocation was cut short: no answer


# ---------------------------------------------------------------- make up RUNTIME=lambda


def test_up_on_lambda_trains_serves_retrains_on_upload_and_leaves_nothing(
    tmp_path: Path, sample_raw: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(tmp_path, cloud="aws", runtime="lambda")
    try:
        stack.wait_ready(timeout=600)
        assert any("Runtime Interface Emulator" in line for line in stack.lines)
        status, forecast, _ = stack.get("/forecast")
        assert status == 200 and forecast["price"] > 0
        cli = subprocess.run(
            [sys.executable, "-m", "milkprice.local.cli", "train"],
            cwd=ROOT,
            env=stack.env,  # the train token and the ports: as a user runs it after up
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert cli.returncode == 0 and "promoted" in cli.stdout, cli.stdout + cli.stderr
        manual = cli.stdout.split("run ", 1)[1].split(":", 1)[0]
        _served(stack, manual)

        s3 = clouds.s3_client(stack.bucket_port)
        started = time.monotonic()
        changed = sample_raw["precio_leche.csv"] + b"\n"
        s3.put_object(Bucket="milk-price", Key=store.RAW_PREFIX + "precio_leche.csv", Body=changed)
        newer = _served(stack, None, other_than=manual)
        took = time.monotonic() - started
        with capsys.disabled():
            print(f"\nupload to the new model served under the emulator: {took:.1f} s")
        assert newer != manual

        under = stack.descendants()
        assert len(under) >= 8  # the bucket, 4 emulators and their runtimes, 2 fronts, events
        stack.proc.send_signal(signal.SIGTERM)
        assert stack.proc.wait(timeout=60) == 0
        assert _alive(under) == set(), "left running after the stop"
        assert not held_ports(stack.ports)
    finally:
        stack.close()


def _served(stack: Stack, version: str | None, other_than: str = "", limit: float = 300) -> str:
    """Wait until predict serves ``version`` (None: any other than ``other_than``)."""
    deadline = time.monotonic() + limit
    while True:
        status, doc, _ = stack.get("/forecast")
        found = str(doc.get("model_version", "")) if status == 200 else ""
        if found == version or (version is None and found and found != other_than):
            return found
        assert time.monotonic() < deadline, "\n".join(stack.lines[-40:])
        time.sleep(0.3)
