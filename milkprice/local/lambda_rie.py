"""AWS Lambda, locally and without Docker: the real Runtime Interface Emulator (RIE) running a
handler under the Python runtime interface client (``awslambdaric``), as ``sam local`` runs
them inside its container.

The emulator is one static Go binary. aws-sam-cli's wheel on PyPI carries it
(``samcli/local/rapid/aws-lambda-rie-<arch>``); only that file is taken. The wheel, pinned by
version and sha256, is downloaded once by pip (which checks the hash) into ``lambda-rie/`` of
the state folder, the binary is extracted, checked against its own sha256, and the wheel
deleted. aws-sam-cli itself is not installed: it pins boto3, click, watchdog and jsonschema
at releases other than ours, and brings some forty packages for this one file.

An emulator listens on ``--runtime-interface-emulator-address`` and serves the Lambda Runtime
API to its runtime on ``--runtime-api-address`` (both on 127.0.0.1 here, on ports of their
own); it starts the runtime, ``python -m awslambdaric module.handler``, at the first
invocation (the cold start), in a process group of the runtime's own, which
``processes.stop`` finds and stops with it. It serves ONE invocation at a time: a second one
sent while the first runs makes it crash, so every caller here holds an emulator for the
whole of an invocation (``Pool``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milkprice import http_client as http
from milkprice.errors import StackError
from milkprice.local import processes
from milkprice.settings import LocalSettings

# the release whose wheel carries the emulator, and the sha256 of that wheel (pip checks it)
SAM_CLI = "aws-sam-cli==1.170.0"
SAM_CLI_WHEEL_SHA256 = "24ebaf5ecba38dc1758089968cb89ab61e124b84e92a344fc7a2771a47f4d0bf"
# the emulator binary of each machine, inside that wheel, and its own sha256
BINARIES = {
    "x86_64": (
        "aws-lambda-rie-x86_64",
        "6b1e686e62ab2baf5759c412c4864276ef2a88b094fca53ec070637ccba9b9a5",
    ),
    "aarch64": (
        "aws-lambda-rie-arm64",
        "ec2e5d09633d853834c008b1ef264bf834b258a94d551d2b2074966494b39a21",
    ),
}
MEMBER = "samcli/local/rapid/"
INVOCATIONS = "/2015-03-31/functions/function/invocations"
PIP_TIMEOUT = 300.0


def folder() -> Path:
    """Where the emulator is kept: ``lambda-rie/`` in the state folder."""
    return LocalSettings.from_env().state_path("lambda-rie")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def binary(where: Path | None = None) -> Path:
    """The emulator for this machine, downloaded and extracted on first use."""
    machine = platform.machine()
    if machine not in BINARIES:
        raise StackError(f"the Lambda Runtime Interface Emulator has no build for {machine}")
    name, digest = BINARIES[machine]
    where = (where or folder()).resolve()
    target = where / name
    if target.exists() and _sha256(target) == digest:
        return target
    where.mkdir(parents=True, exist_ok=True)
    with (where / ".install.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # one download at a time; the others then find it
        if not (target.exists() and _sha256(target) == digest):
            _extract(_download(where), name, digest, target)
    return target


def _download(where: Path) -> Path:
    """aws-sam-cli's wheel, its sha256 checked by pip, into ``where``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=where, delete=False) as pinned:
        pinned.write(f"{SAM_CLI} --hash=sha256:{SAM_CLI_WHEEL_SHA256}\n")
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    args += ["--no-deps", "--only-binary", ":all:", "--require-hashes", "-r", pinned.name]
    try:
        done = subprocess.run(
            [*args, "-d", str(where)], capture_output=True, text=True, timeout=PIP_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"pip did not download {SAM_CLI} within {PIP_TIMEOUT:.0f} s") from None
    finally:
        os.unlink(pinned.name)
    wheels = sorted(where.glob("aws_sam_cli-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise StackError(f"pip could not download {SAM_CLI} (for its Lambda emulator):\n{tail}")
    return wheels[-1]


def _extract(wheel: Path, name: str, digest: str, target: Path) -> None:
    """The one file out of the wheel, checked, made executable; the wheel goes."""
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER + name)
    finally:
        wheel.unlink()
    if hashlib.sha256(data).hexdigest() != digest:
        raise StackError(f"{MEMBER}{name} in {wheel.name} is not the emulator pinned here")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)


# ---------------------------------------------------------------- one emulator


def command(handler: str, port: int, api_port: int, python: str, host: str) -> list[str]:
    """The emulator's command line: its two addresses, then the runtime it starts."""
    return [
        str(binary()),
        "--runtime-interface-emulator-address",
        f"{host}:{port}",
        "--runtime-api-address",
        f"{host}:{api_port}",
        python,
        "-m",
        "awslambdaric",
        handler,
    ]


@dataclass
class Emulator:
    """One emulator process and the URL it takes invocations on."""

    process: processes.Process
    url: str

    def invoke(self, event: Any, timeout: float = 900.0) -> http.Answer:
        """One invocation (the caller makes sure it is the only one under way)."""
        body = json.dumps(event).encode()
        return http.request(self.url, body, {"Content-Type": "application/json"}, timeout)

    def stop(self) -> None:
        processes.stop([self.process])


def start(
    name: str,
    handler: str,
    task_root: str | os.PathLike[str],
    env: Mapping[str, str],
    port: int | None = None,
    host: str = "127.0.0.1",
    python: str = sys.executable,
    output: processes.Output = subprocess.DEVNULL,
    log: Path | None = None,
) -> Emulator:
    """An emulator for ``handler`` (``module.function``) in ``task_root`` (its working folder,
    as /var/task on Lambda), answering once its port is open; the runtime starts at the
    first invocation."""
    api_port, free = processes.free_ports(2, host)
    port = port or free
    args = command(handler, port, api_port, python, host)
    proc = processes.start(name, args, env, cwd=task_root, output=output, log=log)
    url = f"http://{host}:{port}{INVOCATIONS}"
    processes.wait_until(lambda: listening(host, port), proc, limit=30.0)
    return Emulator(proc, url)


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections on ``port``."""
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def function_env(name: str, timeout: int, memory: int = 1024) -> dict[str, str]:
    """What Lambda sets for a function's configuration, and the emulator reads."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "LOG_LEVEL": "warn",  # the emulator's own lines; START/END/REPORT are always printed
    }


# ---------------------------------------------------------------- invocations one at a time


class Pool:
    """Emulators of one function, each lent to one invocation at a time: a caller waits for
    a free one (Lambda would start another instance; here the machine has what it has)."""

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("a pool needs at least one emulator")
        self._free: queue.Queue[str] = queue.Queue()
        for url in urls:
            self._free.put(url)

    @contextmanager
    def lease(self, timeout: float) -> Iterator[str | None]:
        """An emulator's URL for one invocation; None if none came free within ``timeout``."""
        try:
            url = self._free.get(timeout=timeout)
        except queue.Empty:
            yield None
            return
        try:
            yield url
        finally:
            self._free.put(url)


def function_error(doc: Any) -> str | None:
    """What failed, when an answer is the runtime's report of a failed invocation (the
    emulator answers it with 200, where Lambda's Invoke API adds X-Amz-Function-Error)."""
    if isinstance(doc, dict) and {"errorMessage", "errorType"} <= set(doc):
        return f"{doc['errorType']}: {doc['errorMessage']}"
    return None
