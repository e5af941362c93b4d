"""The landing page in a real browser: headless Chromium against the function as a server.

The function runs as it would be deployed (``functions-framework`` over gunicorn) on a trained
bucket; Chromium renders ``GET /``, and every resource the page references must load.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from milkprice import contract
from milkprice.local import processes
from milkprice.settings import Settings
from tests.support.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian package 'chromium')"
)


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), r.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get_content_type()


@pytest.fixture
def served(
    trained_sample: tuple[Settings, dict[str, Any]], gcs: str, tmp_path: Path
) -> Iterator[str]:
    """The predict function as a real HTTP server on a trained bucket; its base URL."""
    settings, _ = trained_sample
    port = processes.free_port()
    env = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": gcs,
        "MILKPRICE_BUCKET": settings.bucket,
    }
    command = processes.function_command(
        "predict", ROOT / "functions" / "predict" / "main.py", port
    )
    server = processes.start("predict", command, env, cwd=ROOT, log=tmp_path / "server.log")
    proc = server.popen
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if get(base + "/v2/health/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        yield base
    finally:
        processes.stop([server])


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Refs(HTMLParser):
    """Every src and href of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_landing_page_in_chromium(
    served: str, trained_sample: tuple[Settings, dict[str, Any]], tmp_path: Path
) -> None:
    settings, _ = trained_sample
    found = contract.read_pointer(settings)
    assert found is not None
    version = found[0].version
    page = served + "/"

    dumped = chromium(tmp_path / "profile-dom", "--dump-dom", page)
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    dom = dumped.stdout
    assert "<title>Milk price forecast, Chile</title>" in dom
    assert version in dom
    forecast = get(served + "/forecast")[1].decode()
    price = float(re.search(r'"price":([0-9.eE+-]+)', forecast).group(1))  # type: ignore[union-attr]
    assert f"{price:.2f}" in dom
    lower = float(re.search(r'"lower":([0-9.eE+-]+)', forecast).group(1))  # type: ignore[union-attr]
    assert 'id="interval"' in dom and f"{lower:.2f}" in dom  # the 80% interval is shown
    assert f"curl -s {served}/forecast" in dom
    assert 'id="metrics"' in dom and "naive" in dom
    # nothing failed to load, and every reference is same-origin and answers 200
    assert "Failed to load resource" not in dumped.stderr, dumped.stderr[-3000:]
    parser = Refs()
    parser.feed(dom)
    assert "backtest.png" in parser.urls
    for ref in parser.urls:
        if ref.startswith("data:"):
            continue
        url = urllib.parse.urljoin(page, ref)
        assert url.startswith(served + "/"), ref
        status, body, kind = get(url)
        assert status == 200, (ref, status, body[:200])
        if ref.endswith(".png"):
            assert kind == "image/png" and body.startswith(b"\x89PNG")

    shot = tmp_path / "landing.png"
    done = chromium(
        tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,1600", page
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-3000:]
    assert "Failed to load resource" not in done.stderr
    keep = os.environ.get("LANDING_SCREENSHOT")  # to look at it: LANDING_SCREENSHOT=path
    if keep:
        shutil.copy(shot, keep)
    from PIL import Image  # comes with matplotlib (the train extra)

    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        colors: list[tuple[int, tuple[int, int, int]]] | None = image.convert("RGB").getcolors(
            maxcolors=1 << 20
        )  # type: ignore[assignment]
    # a rendered page, not a blank one: the dark header, text and the chart's many colours
    assert colors is not None and len(colors) > 200
    dark = sum(n for n, (r, g, b) in colors if r + g + b < 150)
    assert dark > 1200 * 60  # at least the header band
