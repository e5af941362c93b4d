"""Functions served as deployed: functions-framework over gunicorn, each in its own process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from milkprice.local import emulator, http, processes
from milkprice.settings import Settings
from tests.support.paths import ROOT


class Function:
    """One function served by functions-framework in its own process."""

    def __init__(self, target: str, source: str, env: dict[str, str], signature: str = "http"):
        self.port = emulator.free_port()
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
        "MILKPRICE_RELOAD_SECONDS": "0.3",
        "MILKPRICE_STATE_DIR": str(tmp),
        **extra,
    }
