"""Each cloud's object store, locally: start its emulator on a free port and reach it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from milkprice import store
from milkprice.local import emulator, emulators, processes

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
