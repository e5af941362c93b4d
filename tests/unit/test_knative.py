"""The Knative manifests (infra/knative) cannot drift from the code: every MILKPRICE_*
variable is a real setting with a valid value, ports and probe paths are the functions' own
routes, the schedule's call and the sinks' paths are what the train image takes, every caller
of the train service sends the token the service asks for, and every object is valid
Kubernetes (kubernetes-validate, offline, strict)."""

from __future__ import annotations

import copy
import importlib.util
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import functions_framework
import kubernetes_validate
import pytest
import yaml

from milkprice.bridge import shapes as event_shapes
from milkprice.local import cli
from milkprice.predict import routes
from milkprice.settings import PREFIX, LocalSettings, Settings
from milkprice.train import endpoint
from tests.support import dockerfile
from tests.support.paths import ROOT, TRAIN_MAIN

KNATIVE = ROOT / "infra" / "knative"
SERVICE = "serving.knative.dev/v1"
SOURCES = "sources.knative.dev/v1"
NAMESPACE = "milk-price"
TOKEN = "MILKPRICE_TRAIN_TOKEN"
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
SCHEDULE = MANIFESTS["CronJob/milk-price-daily"]
UPLOADS = MANIFESTS["ContainerSource/milk-price-uploads"]
POLICY = MANIFESTS["NetworkPolicy/milk-price-train-ingress"]


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return dict(spec["template"]["spec"])


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    [container] = _pod(doc)["containers"]
    return dict(container)


def _env(doc: dict[str, Any]) -> dict[str, str]:
    """The variables set to a value (not those taken from a Secret)."""
    return {e["name"]: e["value"] for e in _container(doc).get("env", []) if "value" in e}


def _from_secret(doc: dict[str, Any], name: str) -> dict[str, str] | None:
    """Which Secret and key the variable ``name`` is taken from, if it is."""
    for e in _container(doc).get("env", []):
        if e["name"] == name and "valueFrom" in e:
            return dict(e["valueFrom"]["secretKeyRef"])
    return None


def _image(name: str) -> dockerfile.Image:
    return dockerfile.read(f"infra/{name}.Dockerfile")


def test_every_manifest_is_known_and_in_one_namespace() -> None:
    assert set(MANIFESTS) == {
        "Service/milk-price-predict",
        "Service/milk-price-train",
        "CronJob/milk-price-daily",
        "ContainerSource/milk-price-uploads",
        "NetworkPolicy/milk-price-train-ingress",
    }
    assert {d["apiVersion"] for d in (PREDICT, TRAIN)} == {SERVICE}
    assert UPLOADS["apiVersion"] == SOURCES
    assert SCHEDULE["apiVersion"] == "batch/v1"
    assert {d["metadata"]["namespace"] for d in MANIFESTS.values()} == {NAMESPACE}


def test_every_variable_is_a_setting_with_a_valid_value() -> None:
    seen = []
    for doc in (PREDICT, TRAIN, UPLOADS, SCHEDULE):
        # the functions are given only their own settings; the bridge and the schedule, local ones
        kind = Settings if doc in (PREDICT, TRAIN) else LocalSettings
        known = {PREFIX + f.upper() for f in kind.__dataclass_fields__}
        ours = {k: v for k, v in _env(doc).items() if k.startswith(PREFIX)}
        assert set(ours) <= known, set(ours) - known
        settings = kind.from_env(ours)  # a bad value raises, naming the variable
        if doc is not SCHEDULE:  # the schedule only calls the train service
            seen.append(settings)
            assert _container(doc)["envFrom"] == [{"secretRef": {"name": "milk-price-storage"}}]
    # one bucket in one store for all of them
    assert len({(s.bucket, s.cloud) for s in seen}) == 1
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
        handler = predict_main(c[probe]["httpGet"].get("path")).handler
        assert handler is not None
    # the train image answers its probe path with health, starting nothing
    app = functions_framework.create_app("train_service", str(TRAIN_MAIN), "http").test_client()
    path = _container(TRAIN)["readinessProbe"]["httpGet"]["path"]
    answer = app.get(path)
    assert answer.status_code == 200 and answer.get_json()["live"] is True


def _predict_routes() -> Any:
    """The predict function's own router."""
    return lambda path: routes.match("GET", routes.locate(path))


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


def _train_host() -> str:
    """The train service's address inside the cluster (Knative's cluster-local domain)."""
    return f"{TRAIN['metadata']['name']}.{NAMESPACE}.svc.cluster.local"


def test_the_schedule_is_a_cronjob_asking_the_train_service_for_a_scheduled_run() -> None:
    spec, defaults = SCHEDULE["spec"], LocalSettings()
    assert (spec["schedule"], spec["timeZone"]) == (defaults.schedule, defaults.timezone)
    assert spec["concurrencyPolicy"] == "Forbid"  # never two runs at once
    assert _pod(SCHEDULE)["restartPolicy"] == "Never"
    c = _container(SCHEDULE)
    assert c["image"] == _container(TRAIN)["image"]
    program, *argv = c["command"]
    # the project's own command, which the image's pip install of the project puts on PATH
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[program] == "milkprice.local.cli:main"
    args = cli.parser().parse_args(argv)
    assert (args.command, args.trigger) == ("train", "schedule")
    assert cli.COMMANDS[args.command][0] is cli.cmd_train
    assert args.trigger in endpoint.HTTP_TRIGGERS  # what the HTTP trigger takes
    url = urlsplit(LocalSettings.from_env(_env(SCHEDULE)).train_endpoint())
    assert (url.scheme, url.hostname, url.path) == ("http", _train_host(), "/")
    assert not _routed_to_events(url.path)  # the HTTP trigger, not the events endpoint


def _routed_to_events(path: str) -> bool:
    """Whether the train image's target sends a POST at ``path`` to the events endpoint."""
    app = functions_framework.create_app("train_service", str(TRAIN_MAIN), "http").test_client()
    answer = app.post(path, data=b"[]", headers={"Content-Type": "application/json"})
    # the events endpoint refuses an empty batch as no known event; the HTTP trigger refuses
    # any body but an object
    assert answer.status_code == 400, answer.get_data()
    return "expected one of" in answer.get_json()["error"]


def test_the_upload_bridge_runs_from_the_train_image() -> None:
    assert _routed_to_events(_events_path(UPLOADS))
    c = _container(UPLOADS)
    assert c["image"] == _container(TRAIN)["image"]
    program, flag, module = c["command"]
    assert (program, flag) == ("python", "-m")
    assert importlib.util.find_spec(module) is not None
    # the bridge's own extra; the emulators' (local) stays out of the image
    extras = _image("train").extras
    assert module == "milkprice.bridge" and "events" in extras and "local" not in extras
    # its state where a container may write
    assert Path(_env(UPLOADS)["MILKPRICE_STATE_DIR"]).is_relative_to("/tmp")


def _callers() -> list[dict[str, Any]]:
    """Every manifest that sends requests to the train service: a sink naming it, or a
    variable whose URL is its address."""
    found = []
    for doc in MANIFESTS.values():
        sink = doc["spec"].get("sink", {}).get("ref", {})
        urls = (
            [urlsplit(v).hostname for v in _env(doc).values() if "://" in v]
            if (doc["kind"] != "NetworkPolicy")
            else []
        )
        if sink.get("name") == TRAIN["metadata"]["name"] or _train_host() in urls:
            found.append(doc)
    return found


def test_every_caller_of_the_train_service_sends_the_token_it_asks_for() -> None:
    """Cluster-local is not enough: any pod in the cluster can reach the service. It asks for
    the train token from a Secret, and whatever calls it runs our code, which sends it."""
    secret = _from_secret(TRAIN, TOKEN)
    assert secret == {"name": "milk-price-train-token", "key": "token"}
    assert TOKEN not in _env(TRAIN)  # never written into a manifest
    callers = _callers()
    assert {d["kind"] for d in callers} == {"ContainerSource", "CronJob"}
    for doc in callers:
        assert _from_secret(doc, TOKEN) == secret, doc["metadata"]["name"]
        assert TOKEN not in _env(doc)
    # with the variable set, what each sends carries it: the bridge's events, the CLI's call
    settings = LocalSettings.from_env({TOKEN: "from-the-secret"})
    assert event_shapes.authorization(settings) == {"Authorization": "Bearer from-the-secret"}
    assert cli._token(settings) == "from-the-secret"


def test_with_the_token_the_train_service_refuses_a_caller_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN, "from-the-secret")
    app = functions_framework.create_app("train_service", str(TRAIN_MAIN), "http").test_client()
    schedule = {"trigger": "schedule"}
    for path in ("/", _events_path(UPLOADS)):
        assert app.post(path, json=schedule).status_code == 401, path


def test_the_network_policy_admits_only_knatives_data_path_to_the_train_pods() -> None:
    spec = POLICY["spec"]
    # Knative labels every pod of a Service's revisions with the Service's name
    assert spec["podSelector"] == {
        "matchLabels": {"serving.knative.dev/service": TRAIN["metadata"]["name"]}
    }
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    [source] = rule["from"]
    [expression] = source["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "In"
    assert "knative-serving" in expression["values"]  # the activator
    assert NAMESPACE not in expression["values"]  # not the pods beside it


def _as_deployment(doc: dict[str, Any]) -> dict[str, Any]:
    """A Knative template's pod spec as a Deployment's: Knative leaves a probe's port out
    (its container's one), Kubernetes asks for it; Knative's own fields go."""
    spec = copy.deepcopy(_pod(doc))
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


@pytest.mark.parametrize(
    "name", ["CronJob/milk-price-daily", "NetworkPolicy/milk-price-train-ingress"]
)
def test_every_kubernetes_object_is_valid(name: str) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(MANIFESTS[name], version, strict=True)
    broken = copy.deepcopy(MANIFESTS[name])
    broken["spec"]["schedul"] = broken["spec"].pop("schedule", "x")  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
