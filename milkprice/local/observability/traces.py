"""The local trace store: Arize Phoenix, receiving OTLP over HTTP, with a UI and an API.

Phoenix is heavy (a web app, its database, gRPC, LLM clients): it lives in a venv of its own,
``.venv-traces`` (``make install-traces``, from the lock's ``traces`` extra), and never in the
functions' venv, bundles or images. Its traces are kept in the state folder across restarts.

Phoenix keeps no resource attributes, ``service.name`` among them: it files each span under
the project its resource names (``openinference.project.name``). So each function exports to a
project named after its service, and the UI's project list is the list of services.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from milkprice.errors import StackError
from milkprice.local import processes

ROOT = Path(__file__).resolve().parents[3]  # the checkout, where make puts .venv-traces
VENV = ROOT / ".venv-traces"
PORT = 6006  # UI, API and OTLP over HTTP (/v1/traces)
GRPC_PORT = 4317  # OTLP over gRPC: Phoenix always listens there too
PROJECT_ATTRIBUTE = "openinference.project.name"
# the first start under load takes about a minute (its imports alone, 20-40 s on two busy cores)
READY_SECONDS = 240.0


def server(venv: Path = VENV) -> Path:
    """Phoenix's command in its venv; a clear error when the venv was never made."""
    found = venv / "bin" / "arize-phoenix"
    if not found.is_file():
        raise StackError(
            f"the trace store (Arize Phoenix) is not installed in {venv}: run "
            f"'make install-traces' (make up OBSERVE=1 does it), then start again"
        )
    return found


def environment(folder: Path, host: str, port: int, grpc_port: int) -> dict[str, str]:
    """Phoenix's own settings: where it listens, where it keeps its database, and quiet."""
    return {
        "PHOENIX_HOST": host,
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(folder),
        # a local store asks nothing of the internet: no telemetry, fonts or sandbox download
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        # its LLM assistant (which may run shell commands) has no place in a metrics stack
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
        "PHOENIX_AGENTS_DISABLE_BASH": "true",
        "PHOENIX_AGENTS_DISABLE_WEB_ACCESS": "true",
        "PHOENIX_AGENTS_DISABLE_GITHUB": "true",
        # its migrations print every SQL statement otherwise
        "PHOENIX_DB_LOGGING_LEVEL": "warning",
    }


def otel_environment(endpoint: str, service: str) -> dict[str, str]:
    """The standard variables that make a function export its spans to ``endpoint`` (OTLP
    over HTTP: the exporter adds /v1/traces) as ``service``, in Phoenix's project of that name."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": service,
        "OTEL_RESOURCE_ATTRIBUTES": f"{PROJECT_ATTRIBUTE}={service}",
        # every trace kept: on one machine each request is worth seeing, and costs nothing
        # that matters (deployed, predict keeps a share of the traces it starts)
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }


def start(
    state: Path, host: str, port: int, grpc_port: int, env: Mapping[str, str], venv: Path = VENV
) -> processes.Process:
    """Phoenix on ``host:port``, its data in the state folder; its output in its log file
    (a banner of several hundred kilobytes of padding has no place among up's lines)."""
    folder = state / "phoenix"
    folder.mkdir(parents=True, exist_ok=True)
    own = {**env, **environment(folder, host, port, grpc_port)}
    args = [str(server(venv)), "serve"]
    return processes.start("phoenix", args, own, cwd=folder, log=folder / "phoenix.log")


def ready(url: str) -> bool:
    from milkprice import http_client as http

    return http.request(url.rstrip("/") + "/healthz", timeout=2.0).status == 200
