"""The floor of serving through ONNX: the least a function can do to answer a 1-row /predict.

It reads the body, parses it, takes the forecast model's features from the first row, runs the
served ONNX graph once and answers the prices: no checks of any kind, no routes, no metrics, no
traces, no errors named. Beside the bare function (``bench/ceiling``) it shows how much of the
bare function's throughput is left once ONNX Runtime is called at all; predict, which checks
every body, cannot be faster than this. The model is read from the bucket at the first request,
as predict reads it.
"""

from __future__ import annotations

import functools
from typing import Any

import flask
import functions_framework
import numpy as np
import orjson

from milkprice import contract, settings
from milkprice.predict import model


# built at the first request, as predict's model is, kept for the others; the benchmark
# sends that request alone (its readiness probe), so no two requests build it at once
@functools.cache
def _load() -> dict[str, Any]:
    _, entry, graph = contract.served_artifact(settings.load(), "forecast", "onnx")
    session = model.session(graph)  # as predict's: one thread, sequential, CPU
    return {
        "session": session,
        "input": session.get_inputs()[0].name,
        "output": session.get_outputs()[0].name,
        "features": list(entry.features),
    }


@functions_framework.http
def floor(request: flask.Request) -> flask.Response:
    served = _load()
    row = orjson.loads(request.get_data())["data"][0]
    X = np.array([[row[f] for f in served["features"]]], dtype=np.float64)
    prices = served["session"].run([served["output"]], {served["input"]: X})[0]
    return flask.Response(orjson.dumps(np.ravel(prices).tolist()), mimetype="application/json")
