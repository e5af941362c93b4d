"""Local stand-ins for the other clouds' object stores: moto's S3 server and Azurite (blob only).

Each runs in a process group of its own (``processes``) and is ready when a real API call
through its cloud's SDK answers, not when its port opens. ``moto_env`` and ``azurite_env`` are
the variables a client needs to reach them; the SDKs read those themselves. Azurite is an npm
package: it is installed on first use into a folder of the state directory, with the machine's
Node.js and npm.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from milkprice.errors import StackError
from milkprice.local import processes
from milkprice.settings import Settings

MOTO_PORT = 4566
AZURITE_PORT = 10000
# 3.36 and later need Node.js 21 or newer; Debian's Node.js is older.
AZURITE = "azurite"
AZURITE_VERSION = "3.35.0"
# Azurite's one development account; its key is public and the same everywhere.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
NPM_TIMEOUT = 600.0  # seconds the first install of Azurite may take


# ---------------------------------------------------------------- moto (S3)


def moto_env(port: int = MOTO_PORT, host: str = "127.0.0.1") -> dict[str, str]:
    """What boto3 needs to use the local S3: the endpoint, a region and any keys."""
    return {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def moto_ready(port: int = MOTO_PORT, host: str = "127.0.0.1") -> bool:
    """Whether the local S3 lists its buckets."""
    import boto3
    from botocore.config import Config

    env = moto_env(port, host)
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=0.5, read_timeout=2.0, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    finally:
        client.close()
    return True


def start_moto(
    port: int = MOTO_PORT,
    host: str = "127.0.0.1",
    log: Path | None = None,
    wait: float = 60.0,
) -> processes.Process:
    """Start moto's server (S3 in memory: nothing survives a restart); return once it answers."""
    args = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    proc = processes.start("moto", args, os.environ, log=log)
    _wait(proc, lambda: moto_ready(port, host), wait)
    return proc


# ---------------------------------------------------------------- Azurite (Azure Blob Storage)


def azurite_env(port: int = AZURITE_PORT, host: str = "127.0.0.1") -> dict[str, str]:
    """What azure-storage-blob needs to use the local blob service: a connection string."""
    return {"AZURE_STORAGE_CONNECTION_STRING": connection_string(port, host)}


def connection_string(port: int = AZURITE_PORT, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{ACCOUNT};"
    )


def azurite_ready(port: int = AZURITE_PORT, host: str = "127.0.0.1") -> bool:
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
    return Settings.from_env().state_path("node")


def installed_azurite(folder: Path) -> str | None:
    """The version of Azurite installed in ``folder``, if any."""
    package = folder / "node_modules" / AZURITE / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def install_azurite(folder: Path | None = None) -> Path:
    """Azurite's blob server command, installed with npm into ``folder`` on first use."""
    folder = (folder or node_folder()).resolve()
    command = folder / "node_modules" / ".bin" / "azurite-blob"
    if installed_azurite(folder) == AZURITE_VERSION and command.exists():
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
        if installed_azurite(folder) == AZURITE_VERSION and command.exists():
            return command
        args = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                [*args, f"{AZURITE}@{AZURITE_VERSION}"],
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"npm did not install Azurite within {NPM_TIMEOUT:.0f} s") from None
        if done.returncode != 0 or not command.exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise StackError(f"npm could not install {AZURITE}@{AZURITE_VERSION}:\n{tail}")
    return command


def start_azurite(
    root: str | os.PathLike[str],
    port: int = AZURITE_PORT,
    host: str = "127.0.0.1",
    node: Path | None = None,
    log: Path | None = None,
    wait: float = 60.0,
) -> processes.Process:
    """Start Azurite's blob service with its data under ``root`` (kept across restarts)."""
    command = install_azurite(node)
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
    _wait(proc, lambda: azurite_ready(port, host), wait)
    return proc


# ---------------------------------------------------------------- both


def _wait(proc: processes.Process, ready: Callable[[], bool], limit: float) -> None:
    try:
        processes.wait_until(ready, proc, limit=limit, poll=0.1)
    except RuntimeError as exc:
        processes.stop([proc])
        raise StackError(str(exc)) from None


def stop(*procs: processes.Process) -> None:
    """Stop the emulators and everything they started."""
    processes.stop(procs)
