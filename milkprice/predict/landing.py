"""The landing page and its chart: ``landing.html`` rendered with a snapshot's model, backtest
and examples, and the backtest chart's PNG as the bucket holds it (the page shows it if any).
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import orjson

from milkprice.errors import NotFound
from milkprice.predict.snapshot import Loaded


@functools.cache
def _template() -> Any:
    import jinja2  # comes with flask; only the landing page needs it

    text = (
        importlib.resources.files(__package__ or "milkprice.predict")
        .joinpath("landing.html")
        .read_text("utf-8")
    )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(text)


def context(loaded: Loaded, base: str) -> dict[str, Any]:
    """What the template shows: the snapshot's manifest and the examples' bodies."""
    manifest = loaded.manifest
    models = {role: dict(m.entry) for role, m in loaded.models.items()}
    forecast = loaded.models["forecast"]
    values = manifest["next"]["features"]
    row = {name: values[name] for name in forecast.features}
    backtest = manifest.get("backtest") or {}
    tensor = {
        "name": forecast.input,
        "shape": [1, len(forecast.features)],
        "datatype": "FP64",
        "data": list(row.values()),
    }
    scheme, _, host = base.rstrip("/").partition("://")
    return {
        "base": base.rstrip("/"),
        "triton_url": host,
        "triton_ssl": scheme == "https",
        "v2_row": ", ".join(repr(float(v)) for v in row.values()),
        "unit": manifest.get("unit", "CLP per litre"),
        "version": loaded.version,
        "manifest": manifest,
        "pointer": loaded.pointer,
        "loaded": loaded.loaded,
        "forecast": loaded.forecast,
        "models": models,
        "naive": models["forecast"].get("naive") or {"rmse": 0.0, "mae": 0.0, "mape": 0.0},
        "months": backtest.get("months") or ["?"],
        "long_months": backtest.get("long_months") or [],
        "method": backtest.get("method", ""),
        "chart": loaded.chart is not None,
        "candidates": manifest.get("candidates") or [],
        "inputs": manifest.get("inputs") or {},
        "cleaning": manifest.get("cleaning") or {},
        "predict_body": orjson.dumps({"data": [row]}).decode(),
        "v2_body": orjson.dumps({"id": "1", "inputs": [tensor]}).decode(),
    }


def page(loaded: Loaded, base: str) -> str:
    """The landing page of ``loaded``, its examples addressed to ``base``."""
    return str(_template().render(context(loaded, base)))


def chart(loaded: Loaded) -> tuple[bytes, str, str]:
    """The backtest chart's PNG, the version and an ETag; 404 if the model has none."""
    if loaded.chart is None:
        raise NotFound(f"model version {loaded.version} has no backtest chart")
    return loaded.chart, loaded.version, loaded.chart_sha256 or loaded.version
