"""The services as the images run them: the package installed (not editable), cwd outside it.

Each service runs its own command from docker-compose.yml (or its Dockerfile's CMD, exactly,
its port from ``$PORT`` as every platform sets it) with the image's and the compose
variables, from an /app-like folder that holds only ``functions/``, against the real bundled
fake-gcs-server. One fresh venv holds what the images install: the requirements their
Dockerfiles export from the lock (with the default build arguments), installed with every hash
checked, and the project itself without dependencies. The emulators' extra is not in it: the
events service runs from the train image, which does not carry them. Hostnames and ports
become free local ones and the servers bind the loopback address; nothing else changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from google.cloud import storage

from milkprice.local import processes, sample
from milkprice.local.object_stores import fake_gcs
from tests.support import dockerfile, lock
from tests.support.buckets import QUICK_CANDIDATES
from tests.support.paths import ROOT

pytestmark = pytest.mark.slow

IMAGES = ("infra/train.Dockerfile", "infra/predict.Dockerfile")
BUCKET_SERVICE = "gcs"  # played by the bundled binary, started by the test itself
QUICK = {
    "MILKPRICE_BACKTEST_MONTHS": "6",
    "MILKPRICE_LONG_BACKTEST_MONTHS": "0",
    "MILKPRICE_CANDIDATES": QUICK_CANDIDATES,
    "MILKPRICE_RELOAD_SECONDS": "1",
}


@dataclass
class Service:
    name: str
    args: list[str]
    env: dict[str, str]
    port: int | None  # the local port of its published one
    popen: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def tail(self, lines: int = 25) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name}\n" + "\n".join(text)


# ---------------------------------------------------------------- what the images run


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _dockerfile(path: str) -> tuple[list[str], dict[str, str]]:
    """A Dockerfile's CMD (exec form) and its ENV settings."""
    image = dockerfile.read(path)
    return image.command, image.env


def _published(service: dict[str, Any]) -> int | None:
    """The container port a service publishes ("127.0.0.1:8081:8081" -> 8081)."""
    ports = service.get("ports", [])
    return int(ports[0].rsplit(":", 1)[-1]) if ports else None


def _interpolated(value: str) -> str:
    """Compose's ``${VAR:-default}``; the test's environment sets none of them."""
    return re.sub(r"\$\{\w+(?::-([^}]*))?\}", lambda m: m.group(1) or "", value)


def _local(value: str, addresses: dict[str, str]) -> str:
    for compose_address, local in addresses.items():
        value = value.replace(compose_address, local)
    return value


def _with_local_bind(args: list[str], port: int | None) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--host":
            out[i + 1] = "127.0.0.1"
        elif arg == "--port" and port is not None:
            out[i + 1] = str(port)
    return out


def services(base_env: dict[str, str]) -> tuple[dict[str, Service], int]:
    """Every compose service built from the project, on free local ports; the bucket's port."""
    compose = _compose()["services"]
    published = [name for name, s in compose.items() if _published(s)]
    ports = dict(zip(published, processes.free_ports(len(published)), strict=True))
    addresses = {
        f"http://{name}:{_published(s)}": f"http://127.0.0.1:{ports[name]}"
        for name, s in compose.items()
        if name in ports
    }
    found = {}
    for name, spec in compose.items():
        if "build" not in spec:  # an emulator's image: the test plays the bucket itself
            continue
        command, image_env = _dockerfile(spec["build"]["dockerfile"])
        compose_env = {
            k: _local(_interpolated(str(v)), addresses) for k, v in spec["environment"].items()
        }
        env = {**base_env, **image_env, **compose_env, **QUICK}
        leftover = [v for v in env.values() if re.search(r"http://[a-z-]+:\d+", v)]
        leftover = [v for v in leftover if "127.0.0.1" not in v]
        assert not leftover, f"{name}: compose addresses left: {leftover}"
        port = ports.get(name)
        args = _with_local_bind(spec.get("command") or command, port)
        if port is not None and "--port" not in args:
            env["PORT"] = str(port)  # the image's own command: its port comes from $PORT
        found[name] = Service(name, args, env, port)
    return found, ports[BUCKET_SERVICE]


# ---------------------------------------------------------------- the installed package


def install(tmp: Path) -> Path:
    """A fresh venv with the project installed as the images install it; its bin folder."""
    source = tmp / "build"  # a copy: the build's own folders must not land in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "milkprice", source / "milkprice", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # every extra the images install (the predict image's are a subset): one venv serves all
    extras = sorted({e for path in IMAGES for e in dockerfile.read(path).extras})
    requirements = tmp / "requirements.txt"
    requirements.write_text(
        lock.export("--locked", "--no-emit-project", *(f"--extra={e}" for e in extras))
    )
    python = venv / "bin" / "python"
    lock.install(requirements, python)
    lock.uv("pip", "install", "--quiet", "--no-deps", "--python", str(python), str(source))
    return venv / "bin"


def package_folder(bin_dir: Path, cwd: Path) -> Path:
    found = subprocess.run(
        [str(bin_dir / "python"), "-c", "import milkprice; print(milkprice.__file__)"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip()).parent


def base_environment(bin_dir: Path) -> dict[str, str]:
    """The test's environment less anything that would point at the checkout or a bucket."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MILKPRICE_")
        and k not in ("STORAGE_EMULATOR_HOST", "PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


# ---------------------------------------------------------------- running them


def start(service: Service, app: Path, bin_dir: Path, logs: Path) -> None:
    program = shutil.which(service.args[0], path=str(bin_dir))
    assert program, f"{service.args[0]} is not installed in the venv"
    service.log = logs / f"{service.name}.log"
    handle: IO[bytes] = service.log.open("wb")
    service.popen = subprocess.Popen(
        [program, *service.args[1:]],
        cwd=app,
        env=service.env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: a worker in a training goes with its master
    )
    handle.close()


def stop(running: list[Service]) -> None:
    for service in running:
        if service.popen and service.popen.poll() is None:
            os.killpg(service.popen.pid, signal.SIGTERM)
    for service in running:
        if service.popen is None:
            continue
        try:
            service.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(service.popen.pid, signal.SIGKILL)
            service.popen.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker may outlive its master
            os.killpg(service.popen.pid, signal.SIGKILL)


def forecast_version(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/forecast", timeout=2) as r:
            return str(json.loads(r.read())["model_version"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def newer_version(port: int, than: str) -> Callable[[], str | None]:
    def found() -> str | None:
        version = forecast_version(port)
        return version if version != than else None

    return found


def until(found: Callable[[], Any], what: str, running: list[Service], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        dead = [s.name for s in running if s.popen and s.popen.poll() is not None]
        assert not dead, f"{dead} stopped\n" + "\n".join(s.tail() for s in running)
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s\n" + "\n".join(s.tail() for s in running))


@dataclass
class Deployment:
    app: Path
    bin_dir: Path
    services: dict[str, Service]
    bucket: storage.Bucket


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    bin_dir = install(tmp_path)
    app = tmp_path / "app"  # as the images' WORKDIR: the functions' sources, nothing else
    shutil.copytree(
        ROOT / "functions", app / "functions", ignore=shutil.ignore_patterns("__pycache__")
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    found, gcs_port = services(base_environment(bin_dir))
    gcs = fake_gcs.start(tmp_path / "gcs", gcs_port)
    running: list[Service] = []
    try:
        for service in found.values():
            start(service, app, bin_dir, logs)
            running.append(service)
        os.environ["STORAGE_EMULATOR_HOST"] = fake_gcs.url("127.0.0.1", gcs_port)
        settings = found["events"].env
        client = storage.Client(project=settings["MILKPRICE_PROJECT"])
        bucket = client.bucket(settings["MILKPRICE_BUCKET"])
        # the events service makes the bucket once it is up
        until(lambda: client.lookup_bucket(bucket.name), "no bucket", running, timeout=60)
        yield Deployment(app, bin_dir, found, bucket)
    finally:
        stop(running)
        fake_gcs.stop(gcs)


def test_installed_services_train_on_every_upload(deployment: Deployment) -> None:
    d = deployment
    package = package_folder(d.bin_dir, d.app)
    assert not package.is_relative_to(ROOT), f"milkprice imported from the checkout: {package}"
    port = d.services["predict"].port
    assert port is not None
    raw = sample.sample_files()
    for name, payload in raw.items():
        d.bucket.blob(f"raw/{name}").upload_from_string(payload, content_type="text/csv")
    served = until(lambda: forecast_version(port), "no model served", list(d.services.values()))

    # two changes one after the other: each must lead to a model of its own
    for n in (1, 2):
        payload = raw["precio_leche.csv"] + b"\n" * n
        d.bucket.blob("raw/precio_leche.csv").upload_from_string(payload, content_type="text/csv")
        served = until(
            newer_version(port, served),
            f"change {n} was not trained on and served",
            list(d.services.values()),
        )

    assert (d.app / "var" / "bridge-state.json").is_file()
    assert not (package.parent / "var").exists()
    images_answer_as_deployed(d)


def call(
    port: int, path: str, method: str = "GET", body: Any = None, headers: Any = None
) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON answer (None when empty) of one request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, found, text = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        status, found, text = exc.code, dict(exc.headers), exc.read()
    return status, found, json.loads(text) if text.strip() else None


def images_answer_as_deployed(d: Deployment) -> None:
    """The images' own commands, on $PORT: the probes, and the train image's event endpoint
    as the platforms post to it (the uploads here are trained already: nothing new runs)."""
    train, predict = d.services["train"], d.services["predict"]
    assert train.port and predict.port
    for service in (train, predict):  # exactly the image's CMD, but for the bind address
        image = dockerfile.read(f"infra/{service.name}.Dockerfile")
        assert _with_local_bind(image.command, None) == service.args, service.name
        assert "--port" not in service.args and service.env["PORT"] == str(service.port)
    assert call(predict.port, "/v2/health/live")[0] == 200
    status, _, ready = call(predict.port, "/v2/health/ready")
    assert status == 200 and ready["ready"] is True, ready
    status, _, health = call(train.port, "/")
    assert status == 200 and health["live"] is True and health["function"] == "train"
    token = {"Authorization": f"Bearer {train.env['MILKPRICE_TRAIN_TOKEN']}"}
    json_body = {"Content-Type": "application/json", **token}
    key = "raw/precio_leche.csv"
    s3 = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": d.bucket.name},
                    "object": {"key": key, "eTag": "0", "sequencer": "1"},
                },
            }
        ]
    }
    status, _, record = call(train.port, "/events", "POST", s3, json_body)
    assert status == 200 and record["outcome"] == "skipped", record
    status, found, _ = call(
        train.port, "/events", "OPTIONS", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert status == 200 and found["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    status, _, refused = call(train.port, "/events", "POST", {"hello": "world"}, json_body)
    assert status == 400 and "S3 event notification" in refused["error"]
