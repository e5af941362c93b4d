"""Each cloud's local object store: which emulator plays it, on which port, and how to reach it.

The functions never look here: they reach storage through their cloud's SDK, which reads its
own endpoint variables. This module is what the local stack and the CLI use to start the
emulator of ``MILKPRICE_CLOUD`` and to hand those variables to every process.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from milkprice import contract, store
from milkprice.errors import NotFound
from milkprice.local import processes
from milkprice.local.object_stores import azurite, fake_gcs, moto_server
from milkprice.settings import LocalSettings, Settings


@dataclass(frozen=True)
class Local:
    """The emulator standing in for one cloud's object store."""

    name: str  # the prefix of its lines and of its process
    what: str  # what it is, for people
    port_variable: str
    # the SDK's own endpoint variables: when one is set, storage is already chosen
    endpoint_variables: tuple[str, ...]


LOCALS = {
    "gcp": Local("gcs", "fake-gcs-server", "MILKPRICE_GCS_PORT", ("STORAGE_EMULATOR_HOST",)),
    "aws": Local(
        "moto", "moto server (S3)", "MILKPRICE_S3_PORT", ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    ),
    "azure": Local(
        "azurite",
        "Azurite (blob service)",
        "MILKPRICE_AZURE_PORT",
        ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL"),
    ),
}
NAMES = frozenset(local.name for local in LOCALS.values())


def local(settings: LocalSettings) -> Local:
    return LOCALS[settings.cloud]


def port(settings: LocalSettings) -> int:
    return {"gcp": settings.gcs_port, "aws": settings.s3_port, "azure": settings.azure_port}[
        settings.cloud
    ]


def url(settings: LocalSettings) -> str:
    return f"http://{settings.host}:{port(settings)}"


def client_env(settings: LocalSettings) -> dict[str, str]:
    """The variables that point the cloud's SDK at the local emulator."""
    if settings.cloud == "aws":
        return moto_server.env(settings.s3_port, settings.host)
    if settings.cloud == "azure":
        return azurite.env(settings.azure_port, settings.host)
    return {"STORAGE_EMULATOR_HOST": url(settings)}


def use_local(settings: LocalSettings, environ: MutableMapping[str, str] | None = None) -> bool:
    """Point this process at the local emulator, unless storage is chosen already.

    Chosen already: ``MILKPRICE_STORAGE=cloud``, or one of the SDK's endpoint variables set.
    Returns whether it did.
    """
    env = os.environ if environ is None else environ
    if settings.storage == "cloud":
        return False
    if any(env.get(v) for v in local(settings).endpoint_variables):
        return False
    env.update(client_env(settings))
    return True


def start(
    settings: LocalSettings, state: Path, gcs_output: int = subprocess.PIPE
) -> processes.Process:
    """Start the cloud's emulator with its data under ``state``; return once it answers.

    fake-gcs-server's lines are few and go to ``gcs_output`` (by default back to the caller,
    ``popen.stdout``); moto and Azurite log every request, so theirs go to a file in ``state``.
    Azurite is installed once, into the state folder's ``node/`` (``azurite.node_folder``).
    """
    own = local(settings)
    if settings.cloud == "aws":  # in memory: nothing survives a restart
        return moto_server.start(settings.s3_port, settings.host, log=state / "s3.log")
    if settings.cloud == "azure":
        return azurite.start(
            state / "azurite", settings.azure_port, settings.host, log=state / "blob.log"
        )
    gcs = fake_gcs.start(state / "gcs", settings.gcs_port, settings.host, log=gcs_output)
    return processes.Process(own.name, gcs)


def start_free(cloud: str, folder: Path) -> tuple[processes.Process, dict[str, str]]:
    """``cloud``'s emulator on a free port, its data and log under ``folder``, and the
    variables its SDK needs to reach it (the tests and the bench start theirs so)."""
    port = processes.free_port()
    settings = LocalSettings(cloud=cloud, gcs_port=port, s3_port=port, azure_port=port)
    folder.mkdir(parents=True, exist_ok=True)
    return start(settings, folder, gcs_output=subprocess.DEVNULL), client_env(settings)


def where(settings: LocalSettings, state: Path) -> str:
    """Where the emulator keeps its data, for people."""
    if settings.cloud == "aws":
        return "in memory: nothing is kept when it stops; its log in " + str(state / "s3.log")
    if settings.cloud == "azure":
        return f"data in {state / 'azurite'}, its log in {state / 'blob.log'}"
    return f"data in {state / 'gcs'}"


def export_version(settings: Settings) -> tuple[str, dict[str, bytes]]:
    """The serving version of ``settings``' bucket and its files, by name: to move it to
    another bucket or cloud (the bench serves one model from every cloud)."""
    found = contract.read_pointer(settings)
    if found is None:
        raise NotFound(f"no model is served from {settings.bucket}")
    version = found[0].version
    prefix = store.model_path(version, "")
    files = {}
    for name, _ in store.list_names(settings, prefix):
        blob = store.read(settings, name)
        if blob is not None:
            files[name.removeprefix(prefix)] = blob.data
    return version, files


def import_version(settings: Settings, version: str, files: dict[str, bytes]) -> str:
    """Write ``files`` as model version ``version`` (its manifest renamed to match), not
    promoted: ``contract.promote`` does that."""
    for name, data in files.items():
        if name == "manifest.json":
            doc = json.loads(data)
            doc["version"] = version
            data = json.dumps(doc).encode()
        store.write(settings, store.model_path(version, name), data)
    return version
