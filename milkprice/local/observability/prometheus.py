"""A real Prometheus server for the local stack: Debian's package, installed without root.

``apt-get download`` fetches Debian's ``prometheus`` package and the JavaScript packages its
web UI links to (jQuery, Bootstrap, Rickshaw, ...: the binary serves them from disk), and
``dpkg-deb -x`` unpacks them all into one folder of the state directory, which is kept: the
next start finds it there. Nothing is installed system-wide, and no package script runs. The
configuration is written anew at each start: one scrape job per function port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from milkprice.errors import StackError
from milkprice.local import processes

# the server, and every package its UI's assets are symlinks into (../../../javascript/...)
PACKAGES = (
    "prometheus",
    "libjs-jquery",
    "libjs-jquery-hotkeys",
    "libjs-bootstrap4",
    "libjs-popper.js",
    "libjs-eonasdan-bootstrap-datetimepicker",
    "libjs-moment",
    "libjs-moment-timezone",
    "libjs-mustache",
    "libjs-rickshaw",
    "libjs-d3",
    "fonts-glyphicons-halflings",
)
# what the server and its UI never read: ~265 of the unpacked ~320 MB (the UI loads
# moment-timezone's one bundled file, not its per-zone data)
PRUNED = (
    "usr/bin/promtool",
    "usr/share/javascript/moment-timezone/data",
    "usr/share/doc",
    "usr/share/man",
)
BINARY = "usr/bin/prometheus"
ASSETS = "usr/share/prometheus/web"
SCRAPE_SECONDS = 5  # a request shows in a graph within seconds, and a laptop barely notices
PORT = 9090
# the example query `up` prints: requests per second to predict, by route and status
EXAMPLE = 'sum by (route, status) (rate(milkprice_predict_requests_total{route!="/metrics"}[1m]))'


@dataclass(frozen=True)
class Target:
    """One scraped port: its job's name (the function's service name) and address."""

    job: str
    address: str  # host:port


def root(state: Path) -> Path:
    """Where the packages are unpacked, in the state folder."""
    return state / "prometheus" / "root"


def install(state: Path, apt_options: Sequence[str] = ()) -> Path:
    """The server's binary, fetched and unpacked on first use and kept; its path.

    ``apt_options`` are passed to apt-get (``-o Name=value``): a test points it at an empty
    package list to see the message a machine with none gets.
    """
    binary = root(state) / BINARY
    if binary.is_file():
        return binary
    root(state).parent.mkdir(parents=True, exist_ok=True)
    # unpacked beside the target and renamed into place: two starts at once, or one stopped
    # midway, never leave a half-unpacked server behind
    with tempfile.TemporaryDirectory(dir=root(state).parent, prefix=".unpacking-") as work:
        folder = Path(work)
        for deb in download(folder / "debs", apt_options):
            _run(["dpkg-deb", "-x", str(deb), str(folder / "root")], "unpack " + deb.name)
        for path in PRUNED:
            target = folder / "root" / path
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
        if not binary.is_file():
            (folder / "root").rename(root(state))
    return binary


def download(into: Path, apt_options: Sequence[str] = ()) -> list[Path]:
    """Debian's packages of ``PACKAGES``, downloaded into ``into`` (no root needed)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise StackError("the local Prometheus comes from Debian's package: it needs apt-get")
    into.mkdir(parents=True)
    options = [f"-o{option}" for option in apt_options]
    done = subprocess.run(
        ["apt-get", *options, "download", *PACKAGES], cwd=into, capture_output=True, text=True
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")]
        if any("Unable to locate package" in line for line in errors):
            raise StackError(
                "the local Prometheus is Debian's 'prometheus' package, and this machine's "
                "package list does not have it: run 'apt-get update' once (as root), then "
                "start again"
            )
        raise StackError("apt-get download of Prometheus failed: " + "; ".join(errors or ["?"]))
    return sorted(into.glob("*.deb"))


def _run(args: list[str], what: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"could not {what}: {done.stderr.strip()}")


def config(targets: Sequence[Target], seconds: int = SCRAPE_SECONDS) -> str:
    """Prometheus' configuration: every target's ``GET /metrics`` every ``seconds``.

    JSON is YAML: the file is written with the standard library, no YAML writer needed.
    """
    every = f"{seconds}s"
    jobs = [
        {
            "job_name": t.job,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [t.address], "labels": {"service": t.job}}],
        }
        for t in targets
    ]
    document = {
        "global": {"scrape_interval": every, "scrape_timeout": every, "evaluation_interval": every},
        "scrape_configs": jobs,
    }
    return json.dumps(document, indent=2) + "\n"


def command(binary: Path, folder: Path, listen: str) -> list[str]:
    """The server on ``listen`` (host:port), its configuration and data in ``folder``."""
    unpacked = binary.parents[1]  # usr/bin/prometheus -> usr
    return [
        str(binary),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        "--storage.tsdb.retention.time=7d",
        f"--web.listen-address={listen}",
        # the package's defaults are absolute paths under /usr and /etc: ours are unpacked
        f"--web.local-assets={unpacked.parent / ASSETS}",
        f"--web.console.templates={unpacked.parent / 'etc/prometheus/consoles'}",
        f"--web.console.libraries={unpacked.parent / 'etc/prometheus/console_libraries'}",
    ]


def start(
    state: Path,
    targets: Sequence[Target],
    host: str,
    port: int,
    env: Mapping[str, str],
    seconds: int = SCRAPE_SECONDS,
) -> processes.Process:
    """The server, installed if need be, scraping ``targets`` every ``seconds``; its output
    in its log file (its lines are for debugging it, not for up's console)."""
    binary = install(state)
    folder = state / "prometheus"
    (folder / "prometheus.yml").write_text(config(targets, seconds))
    args = command(binary, folder, f"{host}:{port}")
    return processes.start("prometheus", args, env, cwd=folder, log=folder / "prometheus.log")


def ready(url: str) -> bool:
    from milkprice import http_client as http

    return http.request(url.rstrip("/") + "/-/ready", timeout=2.0).status == 200


def page(url: str, name: str) -> str:
    """One of the UI's pages: Debian's build serves the classic UI, under /classic/."""
    return f"{url.rstrip('/')}/classic/{name}"


def graph_url(url: str, query: str = EXAMPLE) -> str:
    """The UI's graph page showing ``query``."""
    return page(url, "graph") + "?" + urlencode({"g0.expr": query, "g0.tab": "0"})
