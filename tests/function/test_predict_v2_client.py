"""KServe V2 as a real client uses it: tritonclient's HTTP client, with its defaults, against the
served predict function; then hostile binary bodies over a socket.

The bucket holds three versions: the sample-trained one (served), the first release's (its own
forecast graph, and its legacy pipeline exported by today's exporter), and one whose files are
missing. Every answer is compared with what onnxruntime computes from the ONNX file in the bucket.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from milkprice import contract, store
from milkprice.settings import Settings
from milkprice.train import artifacts
from tests.support.buckets import artifact, clone, manifest, new_settings, promote
from tests.support.paths import RELEASE
from tests.support.raw_http import request
from tests.support.rows import next_row, perturbed
from tests.support.servers import Function, env_for

BROKEN = "0-files-missing"
ROLES = ("forecast", "legacy")


@dataclass
class Served:
    function: Function
    settings: Settings
    served: str  # the version the pointer names
    old: str  # the first release's version
    docs: dict[str, dict[str, Any]]  # manifest by version

    @property
    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(f"127.0.0.1:{self.function.port}")

    def matrix(self, version: str, role: str, n: int) -> np.ndarray:
        """``n`` rows of ``role``'s features in ``version``: next month's row, moved about."""
        doc = self.docs[version]
        features = doc["models"][role]["features"]
        if role == "forecast":
            rows = perturbed(next_row(doc), n, seed=3)
            return np.array([[r[f] for f in features] for r in rows], dtype=np.float64)
        return np.random.default_rng(1).uniform(1.0, 300.0, (n, len(features)))

    def onnx(self, version: str, role: str, X: np.ndarray) -> np.ndarray:
        """What onnxruntime computes from the ONNX file of ``role`` in ``version``."""
        data = artifact(self.settings, version, self.docs[version]["models"][role]["onnx"])
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        [graph_input] = session.get_inputs()
        return np.asarray(session.run(None, {graph_input.name: X})[0], dtype=np.float64)


def add_release(settings: Settings) -> str:
    """The first release's version: its manifest and forecast graph as it wrote them, its
    legacy graph exported from its legacy pipeline (the release kept no legacy.onnx here)."""
    doc = json.loads((RELEASE / "manifest.json").read_text())
    version = doc["version"]
    legacy = doc["models"]["legacy"]
    pipeline = artifacts.from_skops((RELEASE / "legacy.skops").read_bytes())
    graph = artifacts.to_onnx(pipeline, len(legacy["features"]))
    digest = hashlib.sha256(graph).hexdigest()
    legacy["sha256"]["legacy.onnx"] = doc["files"]["legacy.onnx"] = digest
    doc["backtest"].pop("chart", None)  # the release's chart is not kept either
    for name, data in (
        ("forecast.onnx", (RELEASE / "forecast.onnx").read_bytes()),
        ("legacy.onnx", graph),
        ("manifest.json", json.dumps(doc).encode()),
    ):
        store.write(settings, store.model_path(version, name), data)
    return str(version)


@pytest.fixture(scope="module")
def live(
    gcs: str,
    trained_sample: tuple[Settings, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """One predict server for the module on a bucket of three versions."""
    settings = new_settings(backtest_months=6)
    served = clone(trained_sample[0], settings, manifest(trained_sample[0])["version"])
    old = add_release(settings)
    # a release's manifest, named for this version, with none of its files beside it
    broken = json.loads((RELEASE / "manifest.json").read_bytes()) | {"version": BROKEN}
    store.write(settings, store.model_path(BROKEN, "manifest.json"), json.dumps(broken).encode())
    promote(settings, served)
    docs = {v: manifest(settings, v) for v in (served, old)}
    function = Function("predict", "predict", env_for(settings, gcs, tmp_path_factory.mktemp("c")))
    try:
        yield Served(function, settings, served, old, docs)
    finally:
        function.stop()


def test_health_and_metadata_with_the_client(live: Served) -> None:
    client = live.client
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "milk-price"
    assert server["extensions"] == ["binary_tensor_data", "model_repository"]
    # the served one first, then the newest first
    versions = [live.served, *sorted(set(contract.versions(live.settings)) - {live.served})[::-1]]
    assert {live.old, BROKEN} < set(versions)
    for name, role in (("forecast", "forecast"), ("legacy", "legacy"), ("milk-price", "forecast")):
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert meta["versions"] == versions
        assert (
            meta["parameters"]["feature_names"]
            == live.docs[live.served]["models"][role]["features"]
        )
        assert client.is_model_ready(name, live.old)
        old = client.get_model_metadata(name, live.old)
        assert old["versions"] == versions
        assert old["parameters"]["feature_names"] == live.docs[live.old]["models"][role]["features"]
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("forecast", BROKEN)
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("forecast", "no-such-version")
    assert unknown.value.status() == "404"
    assert all(v in unknown.value.message() for v in versions), unknown.value.message()


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_infer_with_the_clients_defaults_equals_onnx(live: Served, datatype: str) -> None:
    """set_data_from_numpy sends binary data; no outputs asked for: every output in binary."""
    client = live.client
    dtype = np.float64 if datatype == "FP64" else np.float32
    for role, n in (("forecast", 7), ("legacy", 50)):
        X = live.matrix(live.served, role, n).astype(dtype)
        tensor = triton.InferInput("X", list(X.shape), datatype)
        tensor.set_data_from_numpy(X)
        result = client.infer(role, [tensor], request_id=f"r-{role}")
        got = result.as_numpy("price")
        assert got.dtype == np.float64 and got.shape == (n, 1)
        expected = live.onnx(live.served, role, X.astype(np.float64))
        np.testing.assert_array_equal(got, expected)
        answer = result.get_response()
        assert answer["model_version"] == live.served and answer["id"] == f"r-{role}"
        assert answer["outputs"][0]["parameters"] == {"binary_data_size": 8 * n}


def test_infer_json_and_mixed_with_the_client(live: Served) -> None:
    client = live.client
    X = live.matrix(live.served, "forecast", 5)
    expected = live.onnx(live.served, "forecast", X)
    for binary_in, binary_out in ((False, False), (False, True), (True, False)):
        tensor = triton.InferInput("X", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X, binary_data=binary_in)
        wanted = [triton.InferRequestedOutput("price", binary_data=binary_out)]
        result = client.infer("milk-price", [tensor], outputs=wanted)
        np.testing.assert_array_equal(result.as_numpy("price"), expected)
        output = result.get_output("price")
        assert ("data" in output) is not binary_out, output
    # the only output is price
    tensor = triton.InferInput("X", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    with pytest.raises(InferenceServerException) as wrong:
        client.infer("forecast", [tensor], outputs=[triton.InferRequestedOutput("prices")])
    assert wrong.value.status() == "400" and "outputs[0].name" in wrong.value.message()


def test_a_versioned_infer_serves_that_version(live: Served) -> None:
    client = live.client
    for role in ROLES:
        X = live.matrix(live.old, role, 6)
        tensor = triton.InferInput("X", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X)
        result = client.infer(role, [tensor], model_version=live.old)
        assert result.get_response()["model_version"] == live.old
        np.testing.assert_array_equal(result.as_numpy("price"), live.onnx(live.old, role, X))
    # unversioned calls still follow the pointer
    X = live.matrix(live.served, "forecast", 2)
    tensor = triton.InferInput("X", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    assert client.infer("forecast", [tensor]).get_response()["model_version"] == live.served
    with pytest.raises(InferenceServerException) as broken:
        client.infer("forecast", [tensor], model_version=BROKEN)
    assert broken.value.status() == "503" and "forecast.onnx is missing" in broken.value.message()


def test_a_versioned_infer_of_another_model(
    live: Served, trained_real: tuple[Settings, dict[str, Any]]
) -> None:
    """A version trained on other data: the same rows get that model's other prices."""
    version = clone(trained_real[0], live.settings, "real-data")
    live.docs[version] = manifest(live.settings, version)
    # the server lists the versions at most once per reload interval (0.3 s here)
    deadline = time.monotonic() + 10
    while not live.client.is_model_ready("forecast", version) and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = perturbed({**next_row(live.docs[live.served]), **next_row(live.docs[version])}, 4)
    prices = {}
    for v, ask in ((version, version), (live.served, "")):
        features = live.docs[v]["models"]["forecast"]["features"]
        X = np.array([[r[f] for f in features] for r in rows], dtype=np.float64)
        tensor = triton.InferInput("X", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X)
        result = live.client.infer("forecast", [tensor], model_version=ask)
        assert result.get_response()["model_version"] == v
        prices[v] = result.as_numpy("price")
        np.testing.assert_array_equal(prices[v], live.onnx(v, "forecast", X))
    assert not np.allclose(prices[version], prices[live.served])


def test_the_repository_index_and_load_and_unload(live: Served) -> None:
    client = live.client
    index = client.get_model_repository_index()
    states = {(e["name"], e["version"]): e for e in index}
    names = ("forecast", "legacy", "milk-price")
    assert set(states) == {(n, v) for n in names for v in contract.versions(live.settings)}
    for name in names:
        assert states[name, live.served]["state"] == "READY"
        assert states[name, BROKEN]["state"] == "UNAVAILABLE" and states[name, BROKEN]["reason"]
    # a version becomes READY once a request has loaded it
    client.get_model_metadata("legacy", live.old)
    client.is_model_ready("legacy", BROKEN)
    ready = client.get_model_repository_index()
    states = {(e["name"], e["version"]): e for e in ready}
    assert states["forecast", live.old]["state"] == "READY"
    assert "forecast.onnx is missing" in states["forecast", BROKEN]["reason"]
    for action in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as refused:
            action("forecast")
        assert refused.value.status() == "403", refused.value
        assert "milkprice rollback" in refused.value.message()
        with pytest.raises(InferenceServerException) as unknown:
            action("nope")
        assert unknown.value.status() == "404"
    # only the ready ones, when asked
    answer = request(live.function.port, "POST", "/v2/repository/index", b'{"ready": true}')
    assert answer.status == 200
    assert {e["state"] for e in answer.doc} == {"READY"}
    loaded = {e["version"] for e in client.get_model_repository_index() if e["state"] == "READY"}
    assert {live.served, live.old} <= {e["version"] for e in answer.doc} == loaded
    assert BROKEN not in loaded


# ---------------------------------------------------------------- hostile binary bodies


def binary_body(
    X: np.ndarray, datatype: str = "FP64", size: Any = None, **tensor: Any
) -> tuple[bytes, int]:
    """An infer body of ``X``'s bytes after its JSON header, and the header's length.

    ``size`` replaces the binary_data_size the bytes have; ``tensor`` adds to the input."""
    data = X.astype("<f8" if datatype == "FP64" else "<f4").tobytes()
    parameters = {"binary_data_size": len(data) if size is None else size}
    described: dict[str, Any] = {"name": "X", "shape": list(X.shape), "datatype": datatype}
    described.update(parameters=parameters, **tensor)
    header = json.dumps({"inputs": [described], "parameters": {"binary_data_output": True}})
    return header.encode() + data, len(header)


def infer(live: Served, body: bytes, length: int | str | None, **kwargs: Any) -> Any:
    headers = {} if length is None else {"Inference-Header-Content-Length": str(length)}
    kwargs.setdefault("content_type", "application/octet-stream")
    return request(
        live.function.port, "POST", "/v2/models/forecast/infer", body, headers=headers, **kwargs
    )


def test_a_binary_answer_by_hand(live: Served) -> None:
    X = live.matrix(live.served, "forecast", 3)
    body, length = binary_body(X)
    answer = infer(live, body, length)
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["x-model-version"] == live.served
    assert answer.headers["content-type"] == "application/octet-stream"
    size = int(answer.headers["inference-header-content-length"])
    doc = json.loads(answer.body[:size])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert "data" not in doc["outputs"][0]
    prices = np.frombuffer(answer.body[size:], dtype="<f8")
    np.testing.assert_array_equal(prices, live.onnx(live.served, "forecast", X).ravel())
    # without a content type, as tritonclient sends it; application/json too
    for kind in (None, "application/json"):
        assert infer(live, body, length, content_type=kind).body == answer.body


def test_hostile_binary_bodies_are_clear_400s(live: Served) -> None:
    X = live.matrix(live.served, "forecast", 3)
    n, width = X.shape
    body, length = binary_body(X)
    size = "inputs[0].parameters.binary_data_size"
    header = "Inference-Header-Content-Length"
    nan = X.copy()
    nan[1, 2] = np.nan
    feature = live.docs[live.served]["models"]["forecast"]["features"][2]
    plain = json.dumps(live_json(X)).encode()
    # the body, its Inference-Header-Content-Length (None: no header), the field, the problem
    cases: dict[str, tuple[bytes, int | str | None, str, str]] = {
        "short body": (body[:-8], length, size, f"but only {8 * n * width - 8} bytes"),
        "long body": (body + bytes(8), length, size, f"but {8 * n * width + 8} bytes"),
        "size not the shape's": (
            *binary_body(X, size=8 * n * width - 8),
            size,
            f"shape [{n}, {width}] of 8-byte values needs {8 * n * width}",
        ),
        "FP32 sized as FP64": (
            *binary_body(X, "FP32", size=8 * n * width),
            size,
            f"of 4-byte values needs {4 * n * width}",
        ),
        "header past the body": (body, len(body) + 1, header, f"only {len(body)}"),
        "header not a number": (body, "12abc", header, "must be a byte count"),
        "header negative": (body, -5, header, "must be a byte count"),
        "header cuts the JSON": (body, length - 3, "", "not valid JSON"),
        "no header": (body, None, "", f"needs the {header} header"),
        "a negative size": (*binary_body(X, size=-1), size, "must be a byte count"),
        "data as well": (*binary_body(X, data=[]), "inputs[0].data", "must be left out"),
        "bytes no input claims": (plain + bytes(8), len(plain), size, "8 bytes follow"),
        "NaN in the bytes": (*binary_body(nan), feature, "not a finite number"),
    }
    for case, (sent, declared, field, problem) in cases.items():
        answer = infer(live, sent, declared)
        assert answer.status == 400, (case, answer.status, answer.body[:300])
        assert answer.headers["content-type"] == "application/json", case
        assert problem in answer.doc["error"], (case, answer.doc)
        if field:
            assert answer.doc["error"].startswith(field) or any(
                d.get("field") == field for d in answer.doc.get("details", [])
            ), (case, answer.doc)
    assert infer(live, body, length, content_type="text/plain").status == 415
    assert infer(live, body, length).status == 200  # and the server still answers


def live_json(X: np.ndarray) -> dict[str, Any]:
    """A JSON-only infer body of ``X``."""
    tensor = {"name": "X", "shape": list(X.shape), "datatype": "FP64", "data": X.ravel().tolist()}
    return {"inputs": [tensor]}


def test_the_landing_pages_client_example_runs_as_printed(
    live: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    page = request(live.function.port, "GET", "/", content_type=None).body.decode()
    found = re.search(r'<pre class="python">(.*?)</pre>', page, re.S)
    assert found is not None
    code = html.unescape(found.group(1))
    assert f'InferenceServerClient("127.0.0.1:{live.function.port}")' in code
    exec(compile(code, "landing-example", "exec"), {})
    printed = capsys.readouterr().out
    # it scores next month's feature row with the served forecast model (the row model:
    # /forecast answers the forecast path's first month, which may differ)
    doc = live.docs[live.served]
    features = doc["models"]["forecast"]["features"]
    X = np.array([[next_row(doc)[f] for f in features]], dtype=np.float64)
    assert printed.strip() == str(live.onnx(live.served, "forecast", X))
