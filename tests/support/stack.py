"""The local stack as a user runs it: ``milkprice up`` in a process of its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from milkprice.local import processes
from milkprice.local.stack import STOP_HINT
from tests.support.buckets import QUICK_CANDIDATES
from tests.support.paths import ROOT

# what up chooses itself: the settings, and each cloud SDK's endpoint variables
SET_BY_UP = (
    "MILKPRICE_",
    "STORAGE_EMULATOR_HOST",
    "AWS_ENDPOINT_URL",
    "AZURE_STORAGE_",
)


class Stack:
    """``milkprice up`` as a user starts it, on free ports, its lines collected."""

    def __init__(
        self,
        tmp: Path,
        ports: dict[str, int] | None = None,
        cloud: str = "gcp",
        runtime: str = "functions",
        candidates: str = QUICK_CANDIDATES,
        args: tuple[str, ...] = (),
    ) -> None:
        bucket_port = {"gcp": "GCS", "aws": "S3", "azure": "AZURE"}[cloud]
        names = (bucket_port, "PREDICT", "TRAIN", "EVENT")
        self.ports = ports or dict(zip(names, processes.free_ports(len(names)), strict=True))
        self.bucket_port = self.ports[bucket_port]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(SET_BY_UP)},
            **{f"MILKPRICE_{k}_PORT": str(v) for k, v in self.ports.items()},
            "MILKPRICE_CLOUD": cloud,
            "MILKPRICE_RUNTIME": runtime,
            "MILKPRICE_STATE_DIR": str(tmp / "state"),
            "MILKPRICE_BUCKET": "milk-price",
            "MILKPRICE_BACKTEST_MONTHS": "6",
            "MILKPRICE_LONG_BACKTEST_MONTHS": "0",
            "MILKPRICE_CANDIDATES": candidates,
            "MILKPRICE_RELOAD_SECONDS": "1",
        }
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milkprice.local.cli", "up", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C at a terminal reaches this group: see interrupt
        )
        threading.Thread(target=self._read, daemon=True).start()

    def interrupt(self, sig: signal.Signals) -> None:
        """What Ctrl-C (SIGINT to the foreground group) or a supervisor (SIGTERM) does."""
        if sig == signal.SIGINT:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def close(self) -> None:
        """Stop ``up`` as a supervisor does (SIGTERM); if it does not stop in time (a test
        that failed midway), kill it and every process under it, so none outlives the test."""
        if self.proc.poll() is not None:
            return
        under = self.descendants()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in under & set(parents()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def descendants(self) -> set[int]:
        """Every process under ``up``, however deep."""
        children: dict[int, list[int]] = {}
        for pid, parent in parents().items():
            children.setdefault(parent, []).append(pid)
        found, todo = set(), [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.add(child)
                todo.append(child)
        return found

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"no {text!r} within {timeout} s; last lines:\n{tail}")

    def wait_ready(self, timeout: float) -> None:
        """Until up has said all it says once ready: its URLs, example and stack lines."""
        self.wait_for(STOP_HINT, timeout)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['PREDICT']}{path}"

    def get(self, path: str) -> tuple[int, Any, dict[str, str]]:
        with urllib.request.urlopen(self.url(path), timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)


def parents() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                found[int(entry.name)] = int(fields[1])
    return found


def held_ports(ports: dict[str, int]) -> list[int]:
    held = []
    for port in ports.values():
        with socket.socket() as s:
            # as servers bind: a listener holds the port, a closed connection's TIME_WAIT not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                held.append(port)
    return held
