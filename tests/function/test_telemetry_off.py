"""With no OTEL_* variable set, neither function loads OpenTelemetry's SDK or exporter,
whatever it is asked, traced requests included: the trace id still reaches the run record.
(Cloud Storage's client imports OpenTelemetry's API itself wherever the API is installed, to
trace its own calls when asked; the API alone sends nothing and costs no request anything.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from milkprice.settings import Settings
from tests.support.buckets import upload
from tests.support.paths import PREDICT_MAIN, TRAIN_MAIN

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SCRIPT = """
import json, sys
import functions_framework
predict_main, train_main, header = sys.argv[1:4]
traced = {"traceparent": header}
predict = functions_framework.create_app("predict", predict_main, "http").test_client()
answers = [predict.get("/forecast", headers=traced).status_code]
row = predict.get("/forecast").get_json()
train = functions_framework.create_app("train_http", train_main, "http").test_client()
record = train.post("/", headers=traced).get_json()
answers.append(predict.get("/metrics").status_code)
ours = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")
loaded = sorted(m for m in sys.modules if m.startswith(ours))
print(json.dumps({"answers": answers, "record": record, "loaded": loaded}))
"""


def test_neither_function_loads_opentelemetry_without_otel_variables(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    upload(settings, sample_raw)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    header = f"00-{TRACE}-00f067aa0ba902b7-01"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(PREDICT_MAIN), str(TRAIN_MAIN), header],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["record"]["outcome"] == "promoted", found["record"]
    assert found["record"]["trace_id"] == TRACE
    assert found["answers"] == [503, 200]  # no model before the run; metrics answered
    assert found["loaded"] == []
