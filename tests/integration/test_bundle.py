"""`make bundle` folders deploy as they are: each installs from its own requirements, with
every hash checked, into a fresh venv and serves under functions-framework against the real
emulator. uv installs them (from its cache, where the lock's files already are after
`make install`): the same requirements, the same check of every hash as pip's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milkprice.local import object_stores, processes
from milkprice.settings import LocalSettings
from tests.support import clouds, lock
from tests.support.buckets import new_settings, promote, upload
from tests.support.paths import ROOT

sys.path.insert(0, str(ROOT / "infra"))
import bundle

pytestmark = pytest.mark.slow


def _venv(folder: Path, tmp: Path) -> Path:
    env_dir = tmp / f"venv-{folder.name}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    lock.install(folder / "requirements.txt", env_dir / "bin" / "python")
    return env_dir / "bin"


@pytest.fixture
def serve(tmp_path: Path, gcs: str) -> Iterator[Any]:
    procs: list[processes.Process] = []

    def start(
        name: str, target: str, settings: LocalSettings, store_env: dict[str, str] | None = None
    ) -> str:
        folder = bundle.bundle(name, tmp_path / "dist", settings.cloud)
        binary = _venv(folder, tmp_path)
        port = processes.free_port()
        env = {
            "PATH": os.environ["PATH"],
            **(store_env or {"STORAGE_EMULATOR_HOST": gcs}),
            "MILKPRICE_CLOUD": settings.cloud,
            "MILKPRICE_BUCKET": settings.bucket,
            "MILKPRICE_BACKTEST_MONTHS": str(settings.backtest_months),
            "MILKPRICE_LONG_BACKTEST_MONTHS": str(settings.long_backtest_months),
            "MILKPRICE_CANDIDATES": settings.candidates,
        }
        command = processes.function_command(target, None, port, bin_dir=binary)
        procs.append(processes.start(target, command, env, cwd=folder))
        url = f"http://127.0.0.1:{port}/"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "v2/health/live", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # any answer: it is up
            except OSError:
                time.sleep(0.1)
        return url

    yield start
    processes.stop(procs)


def test_bundles_install_and_serve(
    serve: Any, sample_raw: dict[str, bytes], tmp_path: Path
) -> None:
    settings = new_settings(backtest_months=6)
    upload(settings, sample_raw)
    train = serve("train", "train_http", settings)
    request = urllib.request.Request(
        train, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as r:
        assert b'"outcome":"promoted"' in r.read().replace(b" ", b"")
    predict = serve("predict", "predict", settings)
    with urllib.request.urlopen(predict + "forecast", timeout=30) as r:
        assert r.status == 200 and b'"price"' in r.read()
    # the predict bundle carries neither pandas nor scikit-learn, nor modules that need them
    reqs = (tmp_path / "dist" / "predict" / "requirements.txt").read_text()
    assert "onnxruntime==" in reqs and "pandas" not in reqs and "scikit-learn" not in reqs
    assert "--hash=sha256:" in reqs
    assert not (tmp_path / "dist" / "predict" / "milkprice" / "data.py").exists()


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_each_cloud_s_predict_bundle_installs_and_serves_from_that_cloud(
    cloud: str,
    serve: Any,
    trained_sample: tuple[LocalSettings, dict[str, Any]],
    tmp_path: Path,
) -> None:
    version, files = object_stores.export_version(trained_sample[0])
    proc, env = clouds.start(cloud, tmp_path / "store")
    try:
        clouds.use(cloud, env)
        settings = new_settings(cloud=cloud, backtest_months=6)
        promote(settings, object_stores.import_version(settings, version, files))
        predict = serve("predict", "predict", settings, env)
        with urllib.request.urlopen(predict + "forecast", timeout=30) as r:
            assert json.loads(r.read())["model_version"] == version
    finally:
        processes.stop([proc])
    # that cloud's SDK and no other's
    reqs = (tmp_path / "dist" / "predict" / "requirements.txt").read_text()
    sdk, other = ("boto3==", "azure-storage-blob==")[:: 1 if cloud == "aws" else -1]
    assert sdk in reqs and other not in reqs
