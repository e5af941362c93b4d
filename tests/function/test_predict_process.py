"""The predict function's process: what it imports, and beside the train function's app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import functions_framework
import pytest

from milkprice.settings import Settings
from tests.support.buckets import manifest
from tests.support.openapi_client import SOURCE, Client
from tests.support.paths import ROOT, TRAIN_MAIN
from tests.support.prices import onnx_prices
from tests.support.rows import next_row

pytestmark = pytest.mark.usefixtures("fresh_process")


def test_serving_imports_no_pandas_or_sklearn(
    trained_sample: tuple[Settings, dict[str, Any]], gcs: str
) -> None:
    settings, _ = trained_sample
    doc = manifest(settings)
    code = f"""
import json, sys
import functions_framework
app = functions_framework.create_app("predict", {SOURCE!r}, "http")
response = app.test_client().post("/predict", json={{"data": [json.loads(sys.argv[1])]}})
assert response.status_code == 200, response.get_data(as_text=True)
top = {{m.split(".")[0] for m in sys.modules}}
heavy = sorted(top & {{"pandas", "sklearn", "scipy", "skl2onnx", "skops", "matplotlib", "onnx"}})
assert "pandas" not in sys.modules and "sklearn" not in sys.modules, heavy
print(json.dumps({{"prices": response.get_json(), "heavy": heavy}}))
"""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "STORAGE_EMULATOR_HOST": gcs,
        "MILKPRICE_BUCKET": settings.bucket,
    }
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(next_row(doc))],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == []
    assert answer["prices"] == pytest.approx(
        onnx_prices(settings, doc, "forecast", [next_row(doc)])
    )


def test_train_and_predict_apps_live_side_by_side(
    settings: Settings, trained_sample: tuple[Settings, dict[str, Any]]
) -> None:
    """create_app loads both sources as module "main"; each app keeps its own module."""
    train = functions_framework.create_app("train_http", str(TRAIN_MAIN), "http").test_client()
    predict = Client()
    train_again = functions_framework.create_app(
        "train_http", str(TRAIN_MAIN), "http"
    ).test_client()
    assert train.get("/").status_code == 405  # the train function's own answer
    assert train_again.get("/").status_code == 405
    assert predict.get("/v2/health/live").status_code == 200
    assert predict.get("/predict").status_code == 405
    assert predict.main_module_globals()["__file__"] == SOURCE
