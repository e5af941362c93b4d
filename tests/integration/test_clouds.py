"""The system on each cloud's object store, as deployed and as a user drives it.

- predict keeps answering while its cloud's emulator is frozen (SIGSTOP) for 10 s, and
  follows the pointer again once it thaws;
- ``milkprice up`` on moto's S3 and on Azurite trains and serves; uploads through the cloud's
  own client library retrain, broken ones fail clearly and leave the serving model alone.
  (Cloud Storage's run is ``test_stack``.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from milkprice import contract, store
from milkprice.local import object_stores, processes
from milkprice.local.object_stores import azurite
from milkprice.settings import LocalSettings
from tests.support import clouds
from tests.support.buckets import new_settings, promote
from tests.support.paths import ROOT
from tests.support.servers import Function, call, env_for
from tests.support.stack import Stack, held_ports
from tests.support.uploads import bad_files

pytestmark = pytest.mark.slow

FROZEN = 10.0  # seconds the emulator is stopped


def _serving(predict: Function) -> tuple[int, str]:
    status, doc = call(predict.url + "forecast", method="GET", timeout=30)
    return status, str(doc["model_version"]) if status == 200 else ""


@pytest.mark.parametrize("cloud", clouds.CLOUDS)
def test_predict_keeps_serving_while_the_store_is_frozen(
    cloud: str, tmp_path: Path, trained_sample: tuple[LocalSettings, dict[str, Any]]
) -> None:
    version, files = object_stores.export_version(trained_sample[0])
    proc, env = clouds.start(cloud, tmp_path / "store")
    predict: Function | None = None
    try:
        clouds.use(cloud, env)
        settings = new_settings(cloud=cloud, backtest_months=6)
        promote(settings, object_stores.import_version(settings, version, files))
        extra = {"MILKPRICE_CLOUD": cloud, **env}
        predict = Function("predict", "predict", env_for(settings, "", tmp_path / "fn", **extra))
        assert _serving(predict) == (200, version)

        os.killpg(proc.pid, signal.SIGSTOP)  # the store hangs: connections open, no answers
        answers: list[int] = []
        try:
            until = time.monotonic() + FROZEN
            while time.monotonic() < until:
                answers.append(_serving(predict)[0])
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        assert answers.count(200) == len(answers) and len(answers) > 20, answers[-5:]

        newer = object_stores.import_version(settings, version + "-b", files)
        promote(settings, newer)  # thawed: the next pointer check finds it
        deadline = time.monotonic() + 60
        while _serving(predict)[1] != newer and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _serving(predict) == (200, newer), predict.log.read_text()[-2000:]
    finally:
        if predict:
            predict.stop()
        processes.stop([proc])
        store.reset()


# ---------------------------------------------------------------- make up CLOUD=...


def _put(cloud: str, port: int) -> Callable[[str, bytes], None]:
    """Upload to the stack's bucket with the cloud's own client library, as a user would."""
    if cloud == "aws":
        client = clouds.s3_client(port)

        def put_object(name: str, data: bytes) -> None:
            client.put_object(Bucket="milk-price", Key=store.RAW_PREFIX + name, Body=data)

        return put_object
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string(port))
    container = service.get_container_client("milk-price")

    def upload_blob(name: str, data: bytes) -> None:
        container.upload_blob(store.RAW_PREFIX + name, data, overwrite=True)

    return upload_blob


def _run_on(settings: LocalSettings, name: str, data: bytes, timeout: float) -> contract.RunRecord:
    """The finished run that took this content of raw/``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        blob = store.read(settings, store.RAW_PREFIX + name)
        token = blob.token if blob is not None and blob.data == data else None
        for record in contract.list_runs(settings, last=10):
            took = record.inputs.get(store.RAW_PREFIX + name)
            if token and took and took.token == token and record.outcome != "running":
                return record
        time.sleep(0.5)
    raise AssertionError(f"no finished run took the new {name} within {timeout:.0f} s")


# the whole stack on the other clouds: make test-long (their stores' contract runs in make test)
@pytest.fixture(params=[pytest.param(c, marks=pytest.mark.long) for c in ("aws", "azure")])
def cloud_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if request.param == "azure" and not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Azurite needs Node.js and npm, not installed here")
    stack = Stack(tmp_path, cloud=request.param)
    yield stack
    stack.close()


def test_up_on_each_cloud_trains_serves_and_retrains_on_upload(
    cloud_stack: Stack, sample_raw: dict[str, bytes]
) -> None:
    stack, cloud = cloud_stack, cloud_stack.env["MILKPRICE_CLOUD"]
    stack.wait_ready(timeout=600)  # the first Azurite install takes a while
    status, forecast, _ = stack.get("/forecast")
    assert status == 200 and forecast["price"] > 0
    first = forecast["model_version"]
    cli = subprocess.run(
        [sys.executable, "-m", "milkprice.local.cli", "status"],
        cwd=ROOT,
        env=stack.env,  # MILKPRICE_CLOUD and the ports: the CLI finds the emulator itself
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and f"serving version {first}" in cli.stdout, cli.stderr

    put = _put(cloud, stack.bucket_port)
    settings = LocalSettings.from_env(stack.env)
    object_stores.use_local(settings)
    store.reset()
    chosen = ("empty file", "semicolon delimiter", "renamed column", "text in a numeric column")
    for case, name, payload, words in bad_files(sample_raw):
        if case not in chosen:
            continue
        put(name, payload)
        record = _run_on(settings, name, payload, timeout=120)
        assert record.outcome == "failed" and record.trigger == "upload", (case, record)
        assert all(word in record.reason for word in words), (case, record.reason)
        assert stack.get("/forecast")[1]["model_version"] == first, case
        kept = store.read(settings, store.RAW_PREFIX + name)
        assert kept is not None and kept.data == payload, case  # kept to inspect

    fixed = sample_raw["precio_leche.csv"] + b"\n"
    put("precio_leche.csv", fixed)
    record = _run_on(settings, "precio_leche.csv", fixed, timeout=300)
    assert record.outcome == "promoted", record
    deadline = time.monotonic() + 60
    while stack.get("/forecast")[1]["model_version"] != record.version:
        assert time.monotonic() < deadline, "\n".join(stack.lines[-30:])
        time.sleep(0.5)

    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(timeout=30) == 0
    assert not held_ports(stack.ports)
