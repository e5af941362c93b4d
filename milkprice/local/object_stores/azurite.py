"""Azure Blob Storage, locally: Azurite's blob service, its data kept under a folder.

An npm package: installed on first use into the state directory's ``node/`` with the machine's
Node.js and npm, once (a lock keeps concurrent installs to one). Ready when a real API call
through azure-storage-blob answers; ``env`` holds the connection string the SDK reads.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

from milkprice.errors import StackError
from milkprice.local import processes
from milkprice.settings import LocalSettings

PORT = 10000
# 3.36 and later need Node.js 21 or newer; Debian's Node.js is older.
PACKAGE = "azurite"
VERSION = "3.35.0"
# Azurite's one development account; its key is public and the same everywhere.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
NPM_TIMEOUT = 600.0  # seconds the first install may take


def env(port: int = PORT, host: str = "127.0.0.1") -> dict[str, str]:
    """What azure-storage-blob needs to use the local blob service: a connection string."""
    return {"AZURE_STORAGE_CONNECTION_STRING": connection_string(port, host)}


def connection_string(port: int = PORT, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{ACCOUNT};"
    )


def ready(port: int = PORT, host: str = "127.0.0.1") -> bool:
    """Whether the local blob service lists its containers."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(
        connection_string(port, host), retry_total=0, connection_timeout=0.5, read_timeout=2.0
    )
    try:
        with client:
            next(iter(client.list_containers(results_per_page=1).by_page()), None)
    except Exception:
        return False
    return True


def node_folder() -> Path:
    """Where Azurite is installed: ``node/`` in the state folder."""
    return LocalSettings.from_env().state_path("node")


def installed(folder: Path) -> str | None:
    """The version of Azurite installed in ``folder``, if any."""
    package = folder / "node_modules" / PACKAGE / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def install(folder: Path | None = None) -> Path:
    """Azurite's blob server command, installed with npm into ``folder`` on first use."""
    folder = (folder or node_folder()).resolve()
    command = folder / "node_modules" / ".bin" / "azurite-blob"
    if installed(folder) == VERSION and command.exists():
        return command
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise StackError(
            f"the local Azure blob service needs {' and '.join(missing)}: "
            "install Node.js and npm (Debian: apt-get install nodejs npm)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".install.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # one install at a time; the others then find it
        if installed(folder) == VERSION and command.exists():
            return command
        args = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                [*args, f"{PACKAGE}@{VERSION}"],
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"npm did not install Azurite within {NPM_TIMEOUT:.0f} s") from None
        if done.returncode != 0 or not command.exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise StackError(f"npm could not install {PACKAGE}@{VERSION}:\n{tail}")
    return command


def start(
    root: str | os.PathLike[str],
    port: int = PORT,
    host: str = "127.0.0.1",
    node: Path | None = None,
    log: Path | None = None,
    wait: float = 60.0,
) -> processes.Process:
    """Start Azurite's blob service with its data under ``root`` (kept across restarts)."""
    command = install(node)
    data = Path(root).resolve()
    data.mkdir(parents=True, exist_ok=True)
    args = [
        str(command),
        "--blobHost",
        host,
        "--blobPort",
        str(port),
        "--location",
        str(data),
        "--skipApiVersionCheck",  # the SDK may speak a newer API version than the emulator
        "--disableTelemetry",
        "--loose",
        "--silent",
    ]
    proc = processes.start("azurite", args, os.environ, cwd=data, log=log)
    processes.wait_ready(proc, lambda: ready(port, host), wait)
    return proc
