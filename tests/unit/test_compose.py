"""docker-compose.yml describes the same topology, ports and variables as the local stack."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from milkprice.local.object_stores import azurite, fake_gcs
from milkprice.settings import PREFIX, LocalSettings
from tests.support import dockerfile
from tests.support.paths import ROOT

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _ports(service: dict[str, Any]) -> set[int]:
    return {int(p.rsplit(":", 2)[-1]) for p in service.get("ports", [])}


def test_services_and_ports_match_the_local_stack(compose: dict[str, Any]) -> None:
    s = LocalSettings()
    services = compose["services"]
    assert set(services) == {"gcs", "s3", "azurite", "train", "train-events", "predict", "events"}
    assert _ports(services["predict"]) == {s.predict_port}
    assert _ports(services["train"]) == {s.train_port}
    assert _ports(services["train-events"]) == {s.event_port}
    assert _ports(services["gcs"]) == {s.gcs_port}
    assert (
        "fake-gcs-server:" in services["gcs"]["image"] and "latest" not in services["gcs"]["image"]
    )
    command = services["gcs"]["command"]
    assert command[command.index("-scheme") + 1] == "http"
    assert command[command.index("-backend") + 1] == "filesystem"
    assert any("/storage" in v for v in services["gcs"]["volumes"])


def _bundled_release() -> str:
    """The release of the bundled binary, from the module version its build recorded."""
    found = re.search(
        rb"mod\tgithub\.com/fsouza/fake-gcs-server\tv(\d+\.\d+\.\d+)",
        fake_gcs.binary().read_bytes(),
    )
    assert found, "the bundled binary records no fake-gcs-server version"
    return found.group(1).decode()  # without build metadata such as '+dirty'


def test_the_bucket_image_is_the_release_the_tests_run(compose: dict[str, Any]) -> None:
    # the tests and the local stack run the bundled binary; compose must run the same release
    image = compose["services"]["gcs"]["image"]
    assert image == f"fsouza/fake-gcs-server:{_bundled_release()}"


def test_every_function_gets_the_same_variables(compose: dict[str, Any]) -> None:
    s = LocalSettings()
    known = {PREFIX + f.upper() for f in s.__dataclass_fields__}
    for name in ("train", "train-events", "predict", "events"):
        env = compose["services"][name]["environment"]
        assert env["MILKPRICE_CLOUD"] == "${CLOUD:-gcp}", name
        assert env["STORAGE_EMULATOR_HOST"] == f"http://gcs:{s.gcs_port}", name
        assert env["AWS_ENDPOINT_URL"] == f"http://s3:{s.s3_port}", name
        assert (
            f"BlobEndpoint=http://azurite:{s.azure_port}/" in env["AZURE_STORAGE_CONNECTION_STRING"]
        )
        assert env["MILKPRICE_BUCKET"] == s.bucket, name
        unknown = {k for k in env if k.startswith(PREFIX)} - known
        assert not unknown, (name, unknown)
    events = compose["services"]["events"]["environment"]
    assert events["MILKPRICE_TRAIN_URL"] == f"http://train:{s.train_port}/"
    assert events["MILKPRICE_EVENT_URL"] == f"http://train-events:{s.event_port}/events"
    assert events["MILKPRICE_SCHEDULE"] == s.schedule


def test_functions_are_built_from_their_own_dockerfiles(compose: dict[str, Any]) -> None:
    for name, path in (
        ("train", "infra/train.Dockerfile"),
        ("predict", "infra/predict.Dockerfile"),
    ):
        build = compose["services"][name]["build"]
        assert build["dockerfile"] == path
        text = (ROOT / path).read_text()
        assert f"functions/{name}" in text
    # what the predict image exports from the lock: the core and its cloud's SDK, no training
    assert dockerfile.read("infra/predict.Dockerfile").extras == ("gcp",)


def _config(**env: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config -q`` offline, with only these variables beside PATH."""
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
    )


NEEDS_COMPOSE = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed"
)


@NEEDS_COMPOSE
def test_compose_file_is_valid() -> None:
    result = _config(MILKPRICE_TRAIN_TOKEN="a-secret-of-ones-own")
    assert result.returncode == 0, result.stderr


@NEEDS_COMPOSE
@pytest.mark.parametrize("env", [{}, {"MILKPRICE_TRAIN_TOKEN": ""}])
def test_compose_refuses_to_start_without_a_train_token(env: dict[str, str]) -> None:
    """No default secret: without a token of one's own, compose says how to make one."""
    result = _config(**env)
    assert result.returncode != 0
    assert "MILKPRICE_TRAIN_TOKEN" in result.stderr and "openssl rand" in result.stderr


def test_every_function_takes_the_train_token_from_the_environment_alone(
    compose: dict[str, Any],
) -> None:
    for name in ("train", "train-events", "predict", "events"):
        value = compose["services"][name]["environment"]["MILKPRICE_TRAIN_TOKEN"]
        # ${VAR:?message}: required and not empty; no ${VAR:-default}, no literal
        assert re.fullmatch(r"\$\{MILKPRICE_TRAIN_TOKEN:\?[^}]+\}", value), (name, value)


def test_each_cloud_s_emulator_is_a_profile_pinned_to_the_release_the_tests_run(
    compose: dict[str, Any],
) -> None:
    s = LocalSettings()
    services = compose["services"]
    pins = (ROOT / "pyproject.toml").read_text()
    moto = re.search(r'"moto\[[^\]]*\]==([\d.]+)"', pins)
    assert moto, "pyproject pins no moto"
    assert services["s3"]["image"] == f"motoserver/moto:{moto.group(1)}"
    assert services["s3"]["profiles"] == ["aws"]
    assert services["s3"]["environment"]["MOTO_PORT"] == str(s.s3_port)
    assert _ports(services["s3"]) == {s.s3_port}
    blob = services["azurite"]
    assert blob["image"].endswith(f"/azurite:{azurite.VERSION}")
    assert blob["profiles"] == ["azure"]
    assert _ports(blob) == {s.azure_port}
    for flag in ("--disableTelemetry", "--skipApiVersionCheck"):
        assert flag in blob["command"]
    for name in ("train", "train-events", "predict", "events"):  # one image per cloud
        assert "profiles" not in services[name]
        assert services[name]["build"]["args"]["CLOUD"] == "${CLOUD:-gcp}", name
