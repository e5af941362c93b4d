"""What a manifest's fields promise of each other, checked before its version is served.

The contract's types check every field on its own as the manifest is decoded; no schema says
that the pointer and the manifest name the same version, that every served model has the
sha256 of its graph, or that the forecast path's months are its horizons in order. A
manifest that breaks one of these would fail later, deep in a request, as a ``KeyError``;
here it is a :class:`LoadError` naming the version and the field, and the version is not
served. Only the ONNX graph's width needs the graph itself, so the snapshot checks that.
"""

from __future__ import annotations

import re

from milkprice.contract import Manifest
from milkprice.errors import LoadError

ROLES = ("forecast", "legacy")  # the models every served version has
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def valid_version(name: str) -> bool:
    """Whether ``name`` can be a version: one path segment of safe characters, no ``..``."""
    return bool(VERSION_NAME.match(name)) and ".." not in name


def manifest(doc: Manifest, version: str) -> None:
    """Every cross-field check of ``doc``, found under ``version``; the first that fails is
    the LoadError."""
    same_version(doc, version)
    served_models(doc, version)
    graphs_named(doc, version)
    features_usable(doc, version)
    next_row_complete(doc, version)
    path_horizons(doc, version)


def same_version(doc: Manifest, version: str) -> None:
    """The manifest found under ``version`` (the pointer's, or the one asked for) is of that
    version: a copy left under another name would serve one model under another's name."""
    if doc.version != version:
        raise LoadError(f"version {version}: its manifest is of version {doc.version!r}")


def served_models(doc: Manifest, version: str) -> None:
    """Both roles the routes serve have a model."""
    missing = [role for role in ROLES if role not in doc.models]
    if missing:
        raise LoadError(f"version {version}: the manifest has no {' or '.join(missing)} model")


def graphs_named(doc: Manifest, version: str) -> None:
    """Every model's ONNX graph is a file of the version, with one sha256 to check it by."""
    for role, entry in doc.models.items():
        name = entry.onnx
        if not name or "/" in name:
            raise LoadError(f"version {version}: the {role} model names no usable graph {name!r}")
        expected = entry.sha256.get(name)
        if expected is None:
            raise LoadError(f"version {version}: the manifest gives no sha256 for {name!r}")
        if doc.files.get(name, expected) != expected:
            raise LoadError(f"version {version}: two different sha256 for {name}")


def features_usable(doc: Manifest, version: str) -> None:
    """Every model names its features, each once: they are its graph's columns."""
    for role, entry in doc.models.items():
        if not entry.features or not all(entry.features):
            raise LoadError(f"version {version}: the {role} model has no usable feature names")
        if len(set(entry.features)) != len(entry.features):
            raise LoadError(f"version {version}: the {role} model repeats a feature name")


def next_row_complete(doc: Manifest, version: str) -> None:
    """The next month's row has a value of every feature the forecast model takes."""
    forecast = doc.models.get("forecast")
    missing = [f for f in (forecast.features if forecast else []) if f not in doc.next.features]
    if missing:
        raise LoadError(
            f"version {version}: the manifest's next row has no value of {', '.join(missing)}"
        )


def path_horizons(doc: Manifest, version: str) -> None:
    """The forecast path's months are horizons 1, 2, ... in order, each with its figures in
    the backtest views: /forecast?months=N serves the first N."""
    path = doc.path
    if path is None:
        return
    found = [m.horizon for m in path.months]
    if found != list(range(1, len(found) + 1)):
        raise LoadError(f"version {version}: the forecast path's horizons are {found}")
    for name, view in (("short", path.short), ("long", path.long)):
        scored = {h.horizon for h in view.horizons} if view is not None else set(found)
        if not set(found) <= scored:
            raise LoadError(
                f"version {version}: the {name} backtest view has no figures of horizons "
                f"{sorted(set(found) - scored)} of the forecast path"
            )
