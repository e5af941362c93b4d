"""``milkprice up --observe``: a real metrics and trace stack beside the functions.

Prometheus (Debian's package, ``prometheus``) scrapes ``GET /metrics`` of the predict port and
both train ports; Arize Phoenix (``traces``) receives the functions' spans over OTLP/HTTP, each
function started with the standard ``OTEL_*`` variables pointing at it. Each takes its usual
port (9090, 6006) or, when that is taken, a free one: ``up`` prints where they are. Without
``--observe`` none of this starts and no function gets an ``OTEL_*`` variable.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from milkprice.local import processes
from milkprice.local.observability import prometheus, traces
from milkprice.settings import LocalSettings

# each function process of the stack (by its name there) and the service it reports as
SERVICES = {
    "predict": "milkprice-predict",
    "train": "milkprice-train",
    "train-events": "milkprice-events",
}
PROMETHEUS_READY_SECONDS = 60.0


@dataclass
class Observed:
    """The running metrics and trace stack: its servers and where they answer."""

    prometheus_url: str
    phoenix_url: str
    children: list[processes.Process] = field(default_factory=list)

    def env(self, name: str) -> dict[str, str]:
        """The ``OTEL_*`` variables of the stack's process ``name`` (none for the others)."""
        service = SERVICES.get(name)
        return traces.otel_environment(self.phoenix_url, service) if service else {}

    def wait(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Return once both answer, or a stop is asked (Phoenix may take a minute); a server
        that exits or never answers is stopped and reported."""
        prometheus_server, phoenix = self.children
        processes.wait_ready(
            prometheus_server,
            lambda: stopping() or prometheus.ready(self.prometheus_url),
            PROMETHEUS_READY_SECONDS,
        )
        processes.wait_ready(
            phoenix, lambda: stopping() or traces.ready(self.phoenix_url), traces.READY_SECONDS
        )

    def lines(self) -> list[str]:
        """Where to look, for ``up`` to print."""
        projects = ", ".join(SERVICES.values())
        return [
            f"metrics: Prometheus {prometheus.page(self.prometheus_url, 'targets')} "
            "(every function's /metrics, "
            f"scraped every {prometheus.SCRAPE_SECONDS} s)",
            f"  requests per second by route: {prometheus.graph_url(self.prometheus_url)}",
            f"traces: Phoenix {self.phoenix_url}/ (one project per service: {projects})",
        ]


def port(host: str, preferred: int) -> int:
    """``preferred`` when nothing listens there, else a free port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, preferred))
        except OSError:
            return processes.free_port(host)
    return preferred


def targets(settings: LocalSettings) -> list[prometheus.Target]:
    """Every function port of the stack, by the service that answers there."""
    ports = {
        "predict": settings.predict_port,
        "train": settings.train_port,
        "train-events": settings.event_port,
    }
    return [prometheus.Target(SERVICES[n], f"{settings.host}:{p}") for n, p in ports.items()]


def start(settings: LocalSettings, state: Path, env: Mapping[str, str]) -> Observed:
    """Start Prometheus and Phoenix (without waiting: Phoenix takes a while; see ``wait``)."""
    host = settings.host
    metrics_port = port(host, prometheus.PORT)
    traces_port = port(host, traces.PORT)
    grpc_port = port(host, traces.GRPC_PORT)
    observed = Observed(f"http://{host}:{metrics_port}", f"http://{host}:{traces_port}")
    try:
        observed.children.append(
            prometheus.start(state, targets(settings), host, metrics_port, env)
        )
        observed.children.append(traces.start(state, host, traces_port, grpc_port, env))
    except BaseException:
        processes.stop(observed.children)
        raise
    return observed
