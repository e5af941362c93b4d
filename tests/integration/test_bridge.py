"""The upload bridge as Knative runs it (``python -m milkprice.bridge``, a
ContainerSource): a real process watching raw/ in the real emulator, delivering to the sink
in ``K_SINK``: the train image's target, served here over HTTP (the training left out)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from werkzeug.serving import make_server

from milkprice.bridge.watcher import sink
from milkprice.local import processes
from milkprice.settings import LocalSettings
from tests.support.paths import TRAIN_MAIN
from tests.support.platform_events import (
    runs,
    upload,
)

pytestmark = pytest.mark.usefixtures("no_training")


@pytest.fixture
def train_url() -> Iterator[str]:
    """The train image's target on a free port, in this process (so the training stays out)."""
    app = functions_framework.create_app("train_service", str(TRAIN_MAIN), "http")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def until_runs(
    settings: LocalSettings, count: int, bridge: processes.Process
) -> list[dict[str, Any]]:
    """The finished runs, once ``count`` of them are (a run's record is written as it starts)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [r for r in runs(settings) if r.get("outcome", "running") != "running"]
        if len(found) >= count:
            return found
        assert bridge.alive(), bridge.tail()
        time.sleep(0.2)
    raise AssertionError(f"{count} finished runs not seen within 60 s\n{bridge.tail()}")


def test_the_bridge_delivers_every_new_version_to_its_sink(
    settings: LocalSettings, sample_raw: dict[str, bytes], train_url: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MILKPRICE_")},
        "MILKPRICE_BUCKET": settings.bucket,
        "MILKPRICE_STATE_DIR": str(tmp_path / "state"),
        "MILKPRICE_EVENT_URL": "http://127.0.0.1:9/not-this-one",
        "K_SINK": f"{train_url}/events",  # as Knative resolves the sink: ref plus uri
    }
    bridge = processes.start(
        "bridge", [sys.executable, "-m", "milkprice.bridge"], env, log=tmp_path / "log"
    )
    try:
        upload(settings, sample_raw)
        [first] = until_runs(settings, 1, bridge)  # three new files settle into one run
        assert first["trigger"] == "upload" and first["outcome"] == "not_promoted", first
        upload(settings, {"precio_leche.csv": sample_raw["precio_leche.csv"] + b"\n"})
        found = until_runs(settings, 2, bridge)
        assert sorted(r["trigger"] for r in found) == ["upload", "upload"]
    finally:
        processes.stop([bridge])
    assert bridge.popen.returncode == 0, bridge.tail()  # SIGTERM: a clean stop
    assert (tmp_path / "state" / "bridge-state.json").is_file()


def test_the_sink_knative_injects_wins() -> None:
    settings = LocalSettings(event_url="http://train.local/events")
    assert sink(settings, {"K_SINK": "http://train.ns.svc/events"}) == "http://train.ns.svc/events"
    assert sink(settings, {}) == "http://train.local/events"
