"""The Knative manifests (infra/knative) cannot drift from the code: every MILKPRICE_*
variable is a real setting with a valid value, ports and probe paths are the functions' own
routes, the schedule's payload and the sinks' paths are what the train image takes, and every
container is a valid Kubernetes container (kubernetes-validate, offline, strict)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import functions_framework
import kubernetes_validate
import pytest
import yaml

from milkprice.settings import PREFIX, Settings
from milkprice.train import triggers
from tests.support import dockerfile
from tests.support.openapi_client import Client
from tests.support.paths import ROOT, TRAIN_MAIN

KNATIVE = ROOT / "infra" / "knative"
SERVICE = "serving.knative.dev/v1"
SOURCES = "sources.knative.dev/v1"
# Knative's default max-revision-timeout-seconds; the Cloud Functions deploy's training timeout
MAX_TIMEOUT, TRAINING_TIMEOUT = 600, 540


def _load() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KNATIVE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


MANIFESTS = _load()
PREDICT = MANIFESTS["Service/milk-price-predict"]
TRAIN = MANIFESTS["Service/milk-price-train"]
PING = MANIFESTS["PingSource/milk-price-daily"]
UPLOADS = MANIFESTS["ContainerSource/milk-price-uploads"]


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    [container] = doc["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(doc: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(doc).get("env", [])}


def _image(name: str) -> dockerfile.Image:
    return dockerfile.read(f"infra/{name}.Dockerfile")


def test_every_manifest_is_known_and_in_one_namespace() -> None:
    assert set(MANIFESTS) == {
        "Service/milk-price-predict",
        "Service/milk-price-train",
        "PingSource/milk-price-daily",
        "ContainerSource/milk-price-uploads",
    }
    assert {d["apiVersion"] for d in (PREDICT, TRAIN)} == {SERVICE}
    assert {d["apiVersion"] for d in (PING, UPLOADS)} == {SOURCES}
    assert {d["metadata"]["namespace"] for d in MANIFESTS.values()} == {"milk-price"}


def test_every_variable_is_a_setting_with_a_valid_value() -> None:
    known = {PREFIX + f.upper() for f in Settings.__dataclass_fields__}
    seen = []
    for doc in (PREDICT, TRAIN, UPLOADS):
        env = _env(doc)
        ours = {k: v for k, v in env.items() if k.startswith(PREFIX)}
        assert set(ours) <= known, set(ours) - known
        seen.append(Settings.from_env(ours))  # a bad value raises, naming the variable
        assert _container(doc)["envFrom"] == [{"secretRef": {"name": "milk-price-storage"}}]
    # one bucket in one store for all of them
    assert len({(s.bucket, s.cloud) for s in seen}) == 1
    # the train service is reachable only inside the cluster, where the bridge and the
    # PingSource send no token: it must not ask for one
    assert "MILKPRICE_TRAIN_TOKEN" not in _env(TRAIN)
    assert TRAIN["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"


def test_ports_and_probes_are_the_functions_own() -> None:
    predict_main = _predict_routes()
    for doc, name in ((PREDICT, "predict"), (TRAIN, "train")):
        [port] = _container(doc)["ports"]
        assert port["containerPort"] == int(_image(name).env["PORT"]), name
        assert port["name"] == "http1"
        assert _container(doc)["image"].endswith(f"/{name}:0.1.0")
    c = _container(PREDICT)
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe"):
        handler, _ = predict_main(c[probe]["httpGet"].get("path"))
        assert handler is not None
    # the train image answers its probe path with health, starting nothing
    app = functions_framework.create_app("train_service", str(TRAIN_MAIN), "http").test_client()
    path = _container(TRAIN)["readinessProbe"]["httpGet"]["path"]
    answer = app.get(path)
    assert answer.status_code == 200 and answer.get_json()["live"] is True


def _predict_routes() -> Any:
    """The predict function's own router, from the app functions-framework builds."""
    route = Client().main_module_globals()["route"]
    return lambda path: route("GET", path)


def _annotations(doc: dict[str, Any]) -> dict[str, str]:
    return dict(doc["spec"]["template"]["metadata"]["annotations"])


def test_scaling() -> None:
    predict = _annotations(PREDICT)
    assert predict["autoscaling.knative.dev/metric"] == "concurrency"
    # one request per server thread of the image
    assert predict["autoscaling.knative.dev/target"] == _image("predict").env["THREADS"]
    assert predict["autoscaling.knative.dev/min-scale"] == "0"  # scales to zero
    assert int(predict["autoscaling.knative.dev/max-scale"]) >= 1
    train = _annotations(TRAIN)
    assert train["autoscaling.knative.dev/min-scale"] == "0"
    assert int(train["autoscaling.knative.dev/max-scale"]) >= 1
    spec = TRAIN["spec"]["template"]["spec"]
    assert spec["containerConcurrency"] == 1  # one training at a time per instance
    assert TRAINING_TIMEOUT <= spec["timeoutSeconds"] <= MAX_TIMEOUT
    # the image keeps a thread free to answer probes while a training runs
    assert int(_image("train").env["THREADS"]) >= 2


def _events_path(doc: dict[str, Any]) -> str:
    sink = doc["spec"]["sink"]
    assert sink["ref"] == {"apiVersion": SERVICE, "kind": "Service", "name": "milk-price-train"}
    return str(sink["uri"])


def test_the_schedule_is_a_ping_the_train_image_takes() -> None:
    spec = PING["spec"]
    defaults = Settings()
    assert (spec["schedule"], spec["timezone"]) == (defaults.schedule, defaults.timezone)
    assert spec["contentType"] == "application/json"
    # the ping as Knative sends it, binary mode: a scheduled run
    headers = {
        "Content-Type": spec["contentType"],
        "ce-specversion": "1.0",
        "ce-type": "dev.knative.sources.ping.v1.event",
        "ce-source": "/apis/v1/namespaces/milk-price/pingsources/milk-price-daily",
        "ce-id": "1",
    }
    found = triggers.parse("POST", headers, spec["data"].encode())
    assert found == triggers.Schedule("knative-ping", "1")
    assert json.loads(spec["data"]) == {"trigger": "schedule"}
    assert _routed_to_events(_events_path(PING))


def _routed_to_events(path: str) -> bool:
    """Whether the train image's target sends a POST at ``path`` to the events endpoint."""
    app = functions_framework.create_app("train_service", str(TRAIN_MAIN), "http").test_client()
    answer = app.post(path, data=b"{}", headers={"Content-Type": "application/json"})
    # the events endpoint refuses an empty object as no known event; the HTTP trigger would
    # have started a run
    return answer.status_code == 400 and "expected one of" in answer.get_json()["error"]


def test_the_upload_bridge_runs_from_the_train_image() -> None:
    assert _routed_to_events(_events_path(UPLOADS))
    c = _container(UPLOADS)
    assert c["image"] == _container(TRAIN)["image"]
    program, flag, module = c["command"]
    assert (program, flag) == ("python", "-m")
    assert importlib.util.find_spec(module) is not None
    # the bridge's own extra; the emulators' (local) stays out of the image
    extras = _image("train").extras
    assert module.startswith("milkprice.local") and "events" in extras and "local" not in extras
    # its state where a container may write
    assert Path(_env(UPLOADS)["MILKPRICE_STATE_DIR"]).is_relative_to("/tmp")


def _as_deployment(doc: dict[str, Any]) -> dict[str, Any]:
    """A Knative template's pod spec as a Deployment's: Knative leaves a probe's port out
    (its container's one), Kubernetes asks for it; Knative's own fields go."""
    spec = copy.deepcopy(doc["spec"]["template"]["spec"])
    for key in ("containerConcurrency", "timeoutSeconds"):
        spec.pop(key, None)
    for container in spec["containers"]:
        port = container.get("ports", [{"containerPort": 8080}])[0]["containerPort"]
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                container[probe]["httpGet"].setdefault("port", port)
    labels = {"app": doc["metadata"]["name"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": doc["metadata"]["name"], "namespace": "milk-price"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


@pytest.mark.parametrize("name", ["predict", "train", "uploads"])
def test_every_pod_spec_is_valid_kubernetes(name: str) -> None:
    doc = {"predict": PREDICT, "train": TRAIN, "uploads": UPLOADS}[name]
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(_as_deployment(doc), version, strict=True)
    # and it can fail: a misspelt field is refused
    broken = _as_deployment(doc)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
