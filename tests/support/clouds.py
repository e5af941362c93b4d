"""Each cloud's object store, locally: start its emulator on a free port, reach it, copy a
served model version onto it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from milkprice import store
from milkprice.local import emulator, emulators, processes
from milkprice.settings import Settings
from tests.support.buckets import pointer

CLOUDS = ("gcp", "aws", "azure")


def start(cloud: str, tmp: Path) -> tuple[processes.Process, dict[str, str]]:
    """The cloud's emulator on a free port, its data under ``tmp``, and the variables its
    SDK needs to reach it. Azurite needs Node.js and npm: skipped, saying so, without them."""
    port = emulator.free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    if cloud == "aws":
        return emulators.start_moto(port, log=tmp / "moto.log"), emulators.moto_env(port)
    if cloud == "azure":
        missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"Azurite needs Node.js and npm; {', '.join(missing)} not installed here")
        proc = emulators.start_azurite(tmp / "data", port, log=tmp / "azurite.log")
        return proc, emulators.azurite_env(port)
    popen = emulator.start(tmp / "gcs", port)
    host = emulator.url("127.0.0.1", port)
    return processes.Process("gcs", popen), {"STORAGE_EMULATOR_HOST": host}


def use(cloud: str, env: dict[str, str]) -> None:
    """Point this process's store at ``cloud`` through ``env``, its clients built afresh."""
    os.environ.update(env)
    os.environ["MILKPRICE_CLOUD"] = cloud
    store.reset()


def export_version(settings: Settings) -> tuple[str, dict[str, bytes]]:
    """The serving version of ``settings``' bucket and its files, by name."""
    version = pointer(settings)["version"]
    prefix = store.model_path(version, "")
    files = {}
    for name, _ in store.list_names(settings, prefix):
        blob = store.read(settings, name)
        assert blob is not None
        files[name.removeprefix(prefix)] = blob.data
    return version, files


def import_version(settings: Settings, version: str, files: dict[str, bytes]) -> str:
    """Write ``files`` as model version ``version`` (its manifest renamed to match)."""
    for name, data in files.items():
        if name == "manifest.json":
            doc = json.loads(data)
            doc["version"] = version
            data = json.dumps(doc).encode()
        store.write(settings, store.model_path(version, name), data)
    return version
