"""Functions served as deployed: functions-framework over gunicorn, each in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from milkprice import http_client as http
from milkprice.local import processes
from milkprice.settings import Settings
from tests.support.paths import ROOT


class Function:
    """One function served by functions-framework in its own process."""

    def __init__(self, target: str, source: str, env: dict[str, str], signature: str = "http"):
        self.port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = Path(env["MILKPRICE_STATE_DIR"]) / f"{target}-{self.port}.log"
        command = processes.function_command(
            target, ROOT / "functions" / source / "main.py", self.port, signature=signature
        )
        self.proc = processes.start(target, command, env, log=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if call(self.url + "v2/health/live", method="GET")[0]:
                return
            time.sleep(0.1)
        raise AssertionError(f"{target} did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        processes.stop([self.proc])


def call(
    url: str,
    body: Any = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout: float = 300,
) -> tuple[int, Any]:
    """One JSON request: the status and the decoded body (0 and None if nothing answered)."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    sent = {"Content-Type": "application/json", **(headers or {})}
    answer = http.request(url, data, sent, timeout, method=method)
    if answer.status == 0:
        return 0, None
    raw = answer.body
    return answer.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw


def env_for(settings: Settings, gcs: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The whole environment of a function process on ``settings``' bucket; logs go to ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ["PATH"],
        "STORAGE_EMULATOR_HOST": gcs,
        "MILKPRICE_BUCKET": settings.bucket,
        "MILKPRICE_BACKTEST_MONTHS": str(settings.backtest_months),
        "MILKPRICE_LONG_BACKTEST_MONTHS": str(settings.long_backtest_months),
        "MILKPRICE_CANDIDATES": settings.candidates,
        "MILKPRICE_RELOAD_SECONDS": "0.3",
        "MILKPRICE_STATE_DIR": str(tmp),
        **extra,
    }


# ---------------------------------------------------------------- the worker's memory


def worker(function: Function) -> int:
    """The pid of the server's one worker: the gunicorn child of the function's process."""
    found: list[int] = []
    for task in Path(f"/proc/{function.proc.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(pid) for pid in (task / "children").read_text().split()]
    assert len(found) == 1, found
    return found[0]


def peak_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def fresh_worker(function: Function, warm: Callable[[], bool]) -> int:
    """Replace the server's worker by a new one, warmed up by ``warm`` (True once it answers as
    it should), its peak memory reset to what it holds then; the new worker's pid."""
    old = worker(function)
    os.kill(old, signal.SIGKILL)  # gunicorn's master forks another
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError):
            new = worker(function)
            if new != old and warm():
                Path(f"/proc/{new}/clear_refs").write_text("5")  # 5: reset the peak (VmHWM)
                return new
        time.sleep(0.05)
    raise AssertionError(f"no new worker: {function.log.read_text()[-2000:]}")
