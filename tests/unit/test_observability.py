"""`milkprice up --observe`'s configuration: what Prometheus scrapes, how the functions find
Phoenix, and that nothing of it is asked for without the flag (nothing started here)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from milkprice.errors import StackError
from milkprice.local import cli
from milkprice.local.observability import SERVICES, Observed, port, prometheus, targets, traces
from milkprice.settings import LocalSettings
from tests.support.paths import ROOT


def test_prometheus_scrapes_every_function_port_every_few_seconds() -> None:
    document = yaml.safe_load(prometheus.config(targets(LocalSettings())))
    assert document["global"]["scrape_interval"] == "5s"
    assert document["global"]["scrape_timeout"] == "5s"
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    assert set(jobs) == {"milkprice-predict", "milkprice-train", "milkprice-events"}
    wanted = {
        "milkprice-predict": "127.0.0.1:8080",
        "milkprice-train": "127.0.0.1:8081",
        "milkprice-events": "127.0.0.1:8082",
    }
    for name, address in wanted.items():
        assert jobs[name]["metrics_path"] == "/metrics"
        (static,) = jobs[name]["static_configs"]
        assert static == {"targets": [address], "labels": {"service": name}}


def test_the_targets_follow_the_configured_ports_and_host() -> None:
    settings = LocalSettings(host="127.0.0.2", predict_port=9180, train_port=9181, event_port=9182)
    found = {t.job: t.address for t in targets(settings)}
    assert found == {
        "milkprice-predict": "127.0.0.2:9180",
        "milkprice-train": "127.0.0.2:9181",
        "milkprice-events": "127.0.0.2:9182",
    }


def test_the_scrape_interval_is_a_parameter() -> None:
    document = yaml.safe_load(prometheus.config([prometheus.Target("x", "h:1")], seconds=2))
    assert document["global"]["scrape_interval"] == "2s"


def test_the_server_s_command_points_at_the_unpacked_package(tmp_path: Path) -> None:
    binary = prometheus.root(tmp_path) / prometheus.BINARY
    args = prometheus.command(binary, tmp_path / "prometheus", "127.0.0.1:9999")
    assert args[0] == str(binary)
    flags = dict(a.removeprefix("--").split("=", 1) for a in args[1:])
    assert flags["web.listen-address"] == "127.0.0.1:9999"
    assert flags["config.file"] == str(tmp_path / "prometheus" / "prometheus.yml")
    assert flags["storage.tsdb.path"] == str(tmp_path / "prometheus" / "data")
    # never the package's own defaults under /usr and /etc: nothing is installed there
    root = prometheus.root(tmp_path)
    assert flags["web.local-assets"] == str(root / "usr/share/prometheus/web")
    assert flags["web.console.templates"] == str(root / "etc/prometheus/consoles")


def test_the_example_query_is_in_the_graph_url() -> None:
    url = prometheus.graph_url("http://127.0.0.1:9090")
    parts = urlsplit(url)
    assert parts.path == "/classic/graph"  # Debian's build: the classic UI
    assert parse_qs(parts.query)["g0.expr"] == [prometheus.EXAMPLE]
    assert "milkprice_predict_requests_total" in prometheus.EXAMPLE


def test_each_function_exports_to_phoenix_as_its_own_service() -> None:
    observed = Observed("http://127.0.0.1:9090", "http://127.0.0.1:6006")
    for name, service in SERVICES.items():
        assert observed.env(name) == {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:6006",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": service,
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={service}",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }
    assert set(SERVICES.values()) == {"milkprice-predict", "milkprice-train", "milkprice-events"}
    # the scheduler and upload events' process is no function: it exports nothing
    assert observed.env("events") == {}


def test_up_says_where_to_look() -> None:
    lines = "\n".join(Observed("http://127.0.0.1:9091", "http://127.0.0.1:6007").lines())
    assert "http://127.0.0.1:9091/classic/targets" in lines
    assert "http://127.0.0.1:9091/classic/graph?g0.expr=" in lines
    assert "http://127.0.0.1:6007/" in lines and "milkprice-predict" in lines


def test_phoenix_listens_where_asked_keeps_its_data_and_calls_no_one(tmp_path: Path) -> None:
    env = traces.environment(tmp_path, "127.0.0.1", 6100, 4400)
    assert env["PHOENIX_HOST"] == "127.0.0.1"
    assert env["PHOENIX_PORT"] == "6100" and env["PHOENIX_GRPC_PORT"] == "4400"
    assert env["PHOENIX_WORKING_DIR"] == str(tmp_path)
    assert env["PHOENIX_TELEMETRY_ENABLED"] == "false"
    assert env["PHOENIX_ALLOW_EXTERNAL_RESOURCES"] == "false"


def test_a_missing_traces_venv_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="make install-traces"):
        traces.server(tmp_path / "no-venv")


def test_the_usual_port_when_free_else_another() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        other = port("127.0.0.1", taken)
        assert other != taken and other > 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert port("127.0.0.1", free) == free


def test_observe_is_a_flag_of_up_off_by_default() -> None:
    assert cli.parser().parse_args(["up"]).observe is False
    assert cli.parser().parse_args(["up", "--observe"]).observe is True


def _make(*args: str) -> str:
    done = subprocess.run(
        ["make", "--dry-run", "--always-make", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.replace("\\\n", " ")


def test_make_up_observes_only_when_asked_and_test_leaves_it_out() -> None:
    up = [line for line in _make("up").splitlines() if "milkprice up" in line]
    assert up and all("--observe" not in line and ".venv-traces" not in line for line in up)
    observed = _make("up", "OBSERVE=1")
    assert "--observe" in observed and "UV_PROJECT_ENVIRONMENT=.venv-traces" in observed
    assert "--extra traces" in observed
    (tests,) = [line for line in _make("test").splitlines() if "pytest" in line]
    assert "not observe" in tests and ".venv-traces" not in _make("test")
    assert "tests/integration/test_observe.py" in _make("test-observe")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test-bench") < ci.index("make test-observe")
