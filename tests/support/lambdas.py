"""AWS Lambda under the real Runtime Interface Emulator, for tests: a Python of Lambda's
release, the runtime interface client for it (Lambda's own runtime carries one), requests with
repeated headers, and a TCP link to storage that a test can cut and mend."""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin

from milkprice.local import processes
from milkprice.local.object_stores import fake_gcs
from tests.support import lock
from tests.support.paths import ROOT

sys.path.insert(0, str(ROOT / "infra"))
import bundle

# what Lambda's python runtime carries: the runtime interface client and what it needs
RUNTIME_CLIENT = ("awslambdaric", "simplejson", "snapshot-restore-py")


def _version(python: str) -> str | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def lambda_python() -> tuple[str, str]:
    """An interpreter of Lambda's Python (``bundle.LAMBDA_PYTHON``) and its version, or, when
    the machine has none, this Python and its own: the zip is then built for this one, by
    the same code (the caller says so)."""
    wanted = bundle.LAMBDA_PYTHON
    home = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [
        shutil.which(f"python{wanted}"),
        *sorted(glob.glob(f"{home}/versions/{wanted}.*/bin/python{wanted}"), reverse=True),
        f"/usr/bin/python{wanted}",
    ]
    for python in filter(None, candidates):
        if _version(python) == wanted:
            return python, wanted
    return sys.executable, f"{sys.version_info[0]}.{sys.version_info[1]}"


def runtime_client(folder: Path, version: str) -> Path:
    """awslambdaric and what it needs, from the lock with their hashes, for ``version``, into
    ``folder``: what Lambda's runtime has in /var/runtime."""
    exported = lock.export("--locked", "--no-emit-project", "--extra", "local")
    kept = [
        match.group(0)
        for match in lock.ENTRY.finditer(exported)
        if match.group("req").split("==")[0].lower() in RUNTIME_CLIENT
    ]
    assert len(kept) == len(RUNTIME_CLIENT), kept
    requirements = folder.with_suffix(".txt")
    requirements.write_text("\n".join(kept) + "\n")
    command = [find_uv_bin(), "pip", "install", "--quiet", "--require-hashes", "--no-deps"]
    command += ["--only-binary", ":all:", "--python-version", version]
    command += ["--python-platform", bundle.LAMBDA_PLATFORM, "--target", str(folder)]
    done = subprocess.run([*command, "-r", str(requirements)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def exchange(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
    timeout: float = 60,
) -> Reply:
    """One request with exactly these headers, repeated ones and Host included."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, found, data)
    finally:
        conn.close()


class Link:
    """A TCP link to ``target``'s port on a port of its own: cut, every connection through it
    is refused (as when a store is unreachable); mended, it forwards again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = processes.free_port()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.mend()

    @property
    def url(self) -> str:
        return fake_gcs.url("127.0.0.1", self.port)

    def mend(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = [*self._open], []
        if self._server is not None:
            self._server.close()
            self._server = None
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        time.sleep(0.1)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                near, _ = server.accept()
            except OSError:
                return  # cut
            try:
                far = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                near.close()
                continue
            far.settimeout(None)
            with self._lock:
                self._open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def parents() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, NotADirectoryError):
            continue
        if entry.name.isdigit() and fields[0] != "Z":
            found[int(entry.name)] = int(fields[1])
    return found


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
