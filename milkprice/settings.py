"""Typed settings, read from ``MILKPRICE_*`` environment variables, in two objects by who reads
them: :class:`Settings`, the deployed functions' (``load``), and :class:`LocalSettings`, which
adds what only the local stack, the CLI and the upload bridge need. Both are read and checked
by the same ``from_env``.

Switching cloud, or from a local emulator to the real cloud, is only a change of environment:
``MILKPRICE_CLOUD`` picks the object store, and each cloud's SDK finds its endpoint in its own
variables (``STORAGE_EMULATOR_HOST``; ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``;
``AZURE_STORAGE_CONNECTION_STRING``). Unset the emulator's and point ``MILKPRICE_BUCKET`` at a
real bucket.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from milkprice.errors import ConfigError

PREFIX = "MILKPRICE_"
LOG_FORMATS = ("auto", "text", "json")
CLOUDS = ("gcp", "aws", "azure")
STORAGES = ("emulator", "cloud")
FORWARDED = ("none", "proto", "all")
SWITCH = ("on", "off")
RUNTIMES = ("functions", "lambda")


@dataclass(frozen=True)
class Settings:
    """What the deployed functions read: the bucket, the training's and serving's limits, the
    train token. Nothing here is about the machine they run on."""

    bucket: str = field(
        default="milk-price", metadata={"doc": "bucket holding raw data and models"}
    )
    project: str = field(default="local-project", metadata={"doc": "Google Cloud project"})
    cloud: str = field(
        default="gcp",
        metadata={
            "doc": "whose object store holds the bucket: gcp, aws or azure",
            "choices": CLOUDS,
        },
    )
    backtest_months: int = field(
        default=24, metadata={"doc": "months scored one step ahead; the best here is served"}
    )
    long_backtest_months: int = field(
        default=60, metadata={"doc": "months of the second, longer view of the same backtest"}
    )
    horizon: int = field(
        default=12,
        metadata={
            "doc": "months of the forecast path (1 to 12), each backtested",
            "range": (1, 12),
        },
    )
    candidates: str = field(
        default="",
        metadata={
            "doc": "the candidates backtested, comma-separated (empty: all; naive always): "
            "fewer make a quicker training, for tests and demos"
        },
    )
    reload_seconds: float = field(
        default=5.0, metadata={"doc": "how often predict checks the pointer"}
    )
    max_body_bytes: int = field(default=10_000_000, metadata={"doc": "largest /predict body"})
    body_timeout: float = field(
        default=3.0, metadata={"doc": "seconds a request body may take to arrive before a 408"}
    )
    trust_forwarded: str = field(
        default="none",
        metadata={
            "doc": "which X-Forwarded-* headers the landing page and /openapi.json follow: "
            "none; proto (the scheme, behind a front end that sets it, as Cloud Run's, "
            "Container Apps' and Knative's do); all (also -Host and -Prefix, only behind a "
            "front end that sets or removes all three)",
            "choices": FORWARDED,
        },
    )
    max_raw_bytes: int = field(default=20_000_000, metadata={"doc": "largest raw file trained on"})
    max_rows: int = field(default=100_000, metadata={"doc": "most rows in one request"})
    train_token: str = field(
        default="", metadata={"doc": "bearer token the train trigger requires"}
    )
    claim_timeout: float = field(
        default=120.0,
        metadata={
            "doc": "seconds an upload run's claim on its raw versions may go without a "
            "heartbeat (sent every third of this) before a redelivery takes it over",
            "range": (1.0, 86400.0),
        },
    )
    metrics: str = field(
        default="on",
        metadata={
            "doc": "on: each function counts its work and answers GET /metrics (Prometheus' "
            "text format); off: nothing is counted on the request path and /metrics is a 404",
            "choices": SWITCH,
        },
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read every field of the class (a subclass's too) from ``MILKPRICE_<FIELD>``; a bad
        value names the variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = PREFIX + f.name.upper()
            if name not in env:
                continue
            raw = env[name]
            kind: Any = type(f.default)
            try:
                values[f.name] = kind(raw) if kind is not str else raw
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
            bounds = f.metadata.get("range")
            if bounds and not bounds[0] <= values[f.name] <= bounds[1]:
                raise ConfigError(f"{name}={raw!r} is not between {bounds[0]} and {bounds[1]}")
            choices = f.metadata.get("choices")
            if choices and raw not in choices:
                raise ConfigError(f"{name}={raw!r} is not one of: {', '.join(choices)}")
        return cls(**values)

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting the class adds to its parent's: its
        table in the README (``Settings``: the functions'; ``LocalSettings``: the rest)."""
        inherited = {
            f.name
            for b in cls.__bases__
            if dataclasses.is_dataclass(b)
            for f in dataclasses.fields(b)
        }
        return [
            (PREFIX + f.name.upper(), str(f.default), f.metadata["doc"])
            for f in dataclasses.fields(cls)
            if f.name not in inherited
        ]


@dataclass(frozen=True)
class LocalSettings(Settings):
    """What only the local stack, the CLI and the upload bridge read, besides the functions'
    own: addresses and ports, the local object store, the state folder, the schedule, how logs
    show. A function never builds one (``load`` gives :class:`Settings`)."""

    runtime: str = field(
        default="functions",
        metadata={
            "doc": "what runs the functions in `make up`: functions (the Functions Framework) "
            "or lambda (AWS Lambda's Runtime Interface Emulator; with cloud aws)",
            "choices": RUNTIMES,
        },
    )
    host: str = field(default="127.0.0.1", metadata={"doc": "address the local stack binds to"})
    predict_port: int = field(default=8080, metadata={"doc": "port of the predict function"})
    train_port: int = field(default=8081, metadata={"doc": "port of the train function (HTTP)"})
    event_port: int = field(default=8082, metadata={"doc": "port of its storage trigger"})
    gcs_port: int = field(default=4443, metadata={"doc": "port of the local fake-gcs-server"})
    s3_port: int = field(default=4566, metadata={"doc": "port of the local S3 (moto server)"})
    azure_port: int = field(
        default=10000, metadata={"doc": "port of the local Azure blob service (Azurite)"}
    )
    storage: str = field(
        default="emulator",
        metadata={
            "doc": "where the CLI finds the bucket when the SDK's endpoint variable is unset: "
            "the local stack's emulator, or the real cloud",
            "choices": STORAGES,
        },
    )
    train_url: str = field(
        default="", metadata={"doc": "train trigger URL (default: host and port)"}
    )
    event_url: str = field(
        default="", metadata={"doc": "storage trigger URL (default: host and port)"}
    )
    state_dir: str = field(
        default="var",
        metadata={"doc": "local state (bucket data, token, bridge); relative to the working dir"},
    )
    schedule: str = field(default="0 3 * * *", metadata={"doc": "crontab of scheduled training"})
    timezone: str = field(default="America/Santiago", metadata={"doc": "time zone of the schedule"})
    log_format: str = field(
        default="auto",
        metadata={
            "doc": "how `up` shows logs: auto (text on a terminal), text or json",
            "choices": LOG_FORMATS,
        },
    )

    def train_endpoint(self) -> str:
        return self.train_url or f"http://{self.host}:{self.train_port}/"

    def event_endpoint(self) -> str:
        return self.event_url or f"http://{self.host}:{self.event_port}/"

    def state_path(self, *parts: str) -> Path:
        """A path in the state folder, absolute, taken against the working directory.

        Never against the package's own location: an installed package lives in
        site-packages, where the state folder neither exists nor belongs.
        """
        return Path.cwd().joinpath(self.state_dir, *parts)


def load() -> Settings:
    """The functions' settings, read from the environment now."""
    return Settings.from_env()


_cached: Settings | None = None


def cached() -> Settings:
    """The functions' settings, read once per process on first use (not at import): for the
    predict function, whose every request reads a limit or two. ``forget`` reads them again."""
    global _cached
    found = _cached
    if found is None:  # two first requests at once both read the same environment: no lock
        found = _cached = load()
    return found


def forget() -> None:
    """The next ``cached`` reads the environment again (a new process, as far as it can tell)."""
    global _cached
    _cached = None
