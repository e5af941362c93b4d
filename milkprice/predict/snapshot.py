"""The serving snapshot: one model version, read from the bucket, verified, ready to serve.

:func:`load` follows the pointer to a version, reads its manifest (typed by the contract, and
kept so), checks what its fields promise of each other (``checks``) and every artifact's
sha256 against it, builds both models' sessions and computes the /forecast answer, so that a
request only reads the immutable :class:`Loaded` it gets. A version that cannot be served as
it is in the bucket is a :class:`LoadError`; a storage outage is the store's own error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np

from milkprice import contract
from milkprice import settings as settings_module
from milkprice.contract import Manifest, ModelEntry, Pointer
from milkprice.errors import ContractError, LoadError, MilkPriceError, NotFound
from milkprice.predict import checks, rows
from milkprice.predict.model import Model, run_options, session, taker

log = logging.getLogger("milkprice.predict")

ROLES = checks.ROLES


@dataclass(frozen=True, eq=False)
class Loaded:
    """Everything one model version serves; never changed, only replaced."""

    version: str
    token: str  # of the pointer object that named this version ("" if loaded by name)
    pointer: Pointer | None  # None if loaded by name
    manifest: Manifest
    models: Mapping[str, Model]
    chart: bytes | None
    chart_sha256: str | None
    forecast: Mapping[str, Any]  # the /forecast answer, computed at load (_served_forecast)
    path: tuple[Mapping[str, Any], ...] | None  # /forecast?months=N's months (None: no path)
    loaded: str  # when this process loaded it (UTC)
    decoder: rows.Decoder  # /predict bodies straight to a matrix of both models' features
    columns: Mapping[str, np.ndarray]  # role -> its features' columns in that matrix


def load(settings: settings_module.Settings) -> Loaded | None:
    """Read the pointer and build the snapshot of the version it names; None if no pointer."""
    try:
        found = contract.read_pointer(settings)
    except ContractError as exc:
        raise LoadError(f"{contract.POINTER} names no version: {exc.message}") from None
    if found is None:
        return None
    pointer, token = found
    if not checks.valid_version(pointer.version):
        raise LoadError(f"{contract.POINTER} names no valid version: {pointer.version!r}")
    return build(settings, pointer.version, token, pointer)


def load_version(settings: settings_module.Settings, version: str) -> Loaded:
    """The snapshot of a version the pointer need not name, verified the same way."""
    if not checks.valid_version(version):
        raise LoadError(f"{version!r} is no valid version name")
    return build(settings, version, "", None)


def build(
    settings: settings_module.Settings, version: str, token: str, pointer: Pointer | None
) -> Loaded:
    """Read ``version``'s manifest, check it, check every artifact's sha256, build both
    models."""
    manifest = _manifest(settings, version)
    checks.manifest(manifest, version)
    models = {role: _model(settings, version, role, manifest.models[role]) for role in ROLES}
    chart = chart_sha = None
    chart_name = manifest.backtest.chart
    if chart_name:
        chart_sha = manifest.files.get(chart_name)
        chart = _fetch(settings, version, chart_name, chart_sha)
    month, price = _next_price(version, manifest, models["forecast"])
    path = _path_answer(manifest)
    answer = _served_forecast(version, path, _forecast_answer(manifest, month, price, version))
    decoder, columns = _decoding(models)
    return Loaded(
        version=version,
        token=token,
        pointer=pointer,
        manifest=manifest,
        models=MappingProxyType(models),
        chart=chart,
        chart_sha256=chart_sha,
        forecast=MappingProxyType(answer),
        path=path,
        loaded=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        decoder=decoder,
        columns=MappingProxyType(columns),
    )


def _manifest(settings: settings_module.Settings, version: str) -> Manifest:
    """The manifest as the contract types it (each field checked as it is decoded)."""
    try:
        return contract.read_manifest(settings, version)
    except NotFound:
        raise LoadError(f"version {version}: manifest.json is missing") from None
    except ContractError as exc:
        raise LoadError(f"version {version}: {exc.message}") from None


def _fetch(
    settings: settings_module.Settings, version: str, name: str, expected: str | None
) -> bytes:
    """An artifact's bytes, only if their sha256 is the manifest's."""
    if expected is None or "/" in name:
        raise LoadError(f"version {version}: the manifest gives no usable sha256 for {name!r}")
    data = contract.read_artifact(settings, version, name)
    if data is None:
        raise LoadError(f"version {version}: {name} is missing")
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise LoadError(
            f"version {version}: {name} has sha256 {digest[:12]}..., "
            f"the manifest says {expected[:12]}..."
        )
    return data


def _model(settings: settings_module.Settings, version: str, role: str, entry: ModelEntry) -> Model:
    """One model's graph, read and verified, in a session (``checks`` vouched for its
    entry: a graph with one sha256, usable features)."""
    features = tuple(entry.features)
    onnx_name = entry.onnx
    expected = entry.sha256[onnx_name]
    try:
        graph = session(_fetch(settings, version, onnx_name, expected))
    except LoadError:
        raise
    except MilkPriceError:
        raise
    except Exception as exc:  # onnxruntime refuses the graph: its words go to the log only
        log.warning("version %s: %s: %s", version, onnx_name, exc, extra={"version": version})
        raise LoadError(f"version {version}: {onnx_name} is no usable ONNX graph") from None
    [graph_input] = graph.get_inputs()
    width = graph_input.shape[1] if len(graph_input.shape) == 2 else None
    if width != len(features):
        raise LoadError(
            f"version {version}: {onnx_name} takes {width} columns, the manifest names "
            f"{len(features)} features"
        )
    return Model(
        role=role,
        entry=entry,
        features=features,
        feature_set=frozenset(features),
        columns=MappingProxyType({name: i for i, name in enumerate(features)}),
        take=taker(features),
        session=graph,
        input=graph_input.name,
        output=graph.get_outputs()[0].name,
        options=run_options(),
    )


def _next_price(version: str, manifest: Manifest, forecast: Model) -> tuple[str, float]:
    """The month the manifest's next row is for, and the forecast model's price of it (the
    row has every feature: ``checks.next_row_complete``)."""
    month = manifest.next.month
    values = manifest.next.features
    X = np.array([[values[name] for name in forecast.features]], dtype=np.float64)
    price = float(forecast.run(X)[0])
    if not np.isfinite(price):
        raise LoadError(f"version {version}: the forecast of {month} is not finite")
    return month, price


def _decoding(models: dict[str, Model]) -> tuple[rows.Decoder, dict[str, np.ndarray]]:
    """The fast path's decoder of both models' features, and each model's columns in it."""
    forecast = models["forecast"]
    union = forecast.features + tuple(
        f for f in models["legacy"].features if f not in forecast.feature_set
    )
    where = {name: i for i, name in enumerate(union)}
    columns = {
        r: np.array([where[f] for f in m.features], dtype=np.intp) for r, m in models.items()
    }
    return rows.decoder(union), columns


def _forecast_answer(manifest: Manifest, month: str, price: float, version: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"month": month, "price": price, "model_version": version}
    spec = manifest.models["forecast"].interval
    if spec is not None:
        answer["interval"] = {
            "level": spec.level,
            "lower": price * (1 + spec.lower_ratio),
            "upper": price * (1 + spec.upper_ratio),
        }
    return answer


def _served_forecast(
    version: str, path: tuple[Mapping[str, Any], ...] | None, one_step: dict[str, Any]
) -> dict[str, Any]:
    """The /forecast answer: the path's first month whenever the manifest has a path, so that
    a month has one forecast whichever route, page or command shows it (the path's one month
    ahead is scored out of sample, on the same months as the one-step model); a version
    trained before the path answers its forecast model's price of the next row, as it did.
    ``source`` says which of the two it is."""
    if not path:
        return {**one_step, "source": "model"}
    first = path[0]
    return {
        "month": first["month"],
        "price": first["price"],
        "model_version": version,
        "interval": dict(first["interval"]),
        "source": "path",
    }


def _path_answer(manifest: Manifest) -> tuple[Mapping[str, Any], ...] | None:
    """Each month of the manifest's forecast path as /forecast?months=N answers it; None for
    a manifest written before the path (``checks.path_horizons`` has checked its order)."""
    found = manifest.path
    if found is None:
        return None
    level = found.level
    return tuple(
        MappingProxyType(
            {
                "month": m.month,
                "price": m.price,
                "interval": {"level": level, "lower": m.lower, "upper": m.upper},
            }
        )
        for m in found.months
    )
