"""The cold-start reference: serving the way a scikit-learn project usually does.

At the first request it reads the pointer, the manifest and ``forecast.skops`` from the
bucket and loads the pipeline with scikit-learn (``milkprice.train.artifacts.from_skops``); every
request builds a pandas DataFrame from the JSON rows and predicts. The benchmark compares the
predict function's cold start (ONNX Runtime, no pandas, no scikit-learn) with this one's.
"""

from __future__ import annotations

import threading
from typing import Any

import flask
import functions_framework
import pandas as pd

from milkprice import contract, settings
from milkprice.train import artifacts

_lock = threading.Lock()
_model: dict[str, Any] = {}


def _load() -> dict[str, Any]:
    with _lock:
        if not _model:
            _, entry, data = contract.served_artifact(settings.load(), "forecast", "skops")
            _model.update(pipeline=artifacts.from_skops(data), features=entry.features)
        return _model


@functions_framework.http
def reference(request: flask.Request) -> list[float]:
    model = _load()
    rows = pd.DataFrame((request.get_json() or {})["data"])
    return [float(y) for y in model["pipeline"].predict(rows[model["features"]])]
