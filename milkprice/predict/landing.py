"""The landing page and its chart: ``landing.html`` rendered with a snapshot's model, backtest
and examples, and the backtest chart's PNG as the bucket holds it (the page shows it if any).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from milkprice import accuracy as live
from milkprice import contract
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


def context(loaded: Loaded, base: str, ledger: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the template shows: the snapshot's manifest, the examples' bodies and the
    ledger's live accuracy (None: it could not be read)."""
    # the page shows the manifest as its JSON has it: the template reads plain values
    manifest = contract.to_builtins(loaded.manifest)
    models = {role: contract.to_builtins(m.entry) for role, m in loaded.models.items()}
    pointer = {} if loaded.pointer is None else contract.to_builtins(loaded.pointer)
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
        "root": urlsplit(base).path.rstrip("/") + "/",  # what relative links resolve against
        "triton_url": host,
        "triton_ssl": scheme == "https",
        "v2_row": ", ".join(repr(float(v)) for v in row.values()),
        "unit": manifest.get("unit", "CLP per litre"),
        "version": loaded.version,
        "manifest": manifest,
        "pointer": pointer,
        "loaded": loaded.loaded,
        "forecast": loaded.forecast,
        "accuracy": accuracy(loaded.forecast, manifest, models["forecast"]),
        "models": models,
        "naive": models["forecast"].get("naive") or {"rmse": 0.0, "mae": 0.0, "mape": 0.0},
        "months": backtest.get("months") or ["?"],
        "long_months": backtest.get("long_months") or [],
        "method": backtest.get("method", ""),
        "chart": loaded.chart is not None,
        "candidates": manifest.get("candidates") or [],
        "inputs": manifest.get("inputs") or {},
        "cleaning": manifest.get("cleaning") or {},
        "path": manifest.get("path"),
        "path_chart": path_chart(manifest.get("path")),
        "predict_body": orjson.dumps({"data": [row]}).decode(),
        "v2_body": orjson.dumps({"id": "1", "inputs": [tensor]}).decode(),
        "ledger": ledger,
        "level": live.LEVEL,
        **_drift_text(ledger),
        "ledger_chart": ledger_chart(ledger),
    }


def _drift_text(ledger: Mapping[str, Any] | None) -> dict[str, str]:
    """The drift state's line, its first word (ok, drift) apart to show it in bold."""
    if ledger is None:
        return {"drift_state": "", "drift_detail": ""}
    text = live.summary(contract.convert(ledger["drift"], contract.Drift, "the ledger's drift"))
    state, _, detail = text.partition(":")
    return {"drift_state": state.capitalize(), "drift_detail": ":" + detail}


def ledger_chart(
    ledger: Mapping[str, Any] | None, width: int = 900, height: int = 280
) -> dict[str, Any] | None:
    """The geometry of the live accuracy chart: the price of every scored month, and each
    one-month forecast served for it with its interval (None: none scored yet)."""
    forecasts = (ledger or {}).get("forecasts") or []
    one = sorted((f for f in forecasts if f["horizon"] == 1), key=lambda f: f["month"])
    if not one:
        return None
    actual = {f["month"]: f["actual"] for f in forecasts}
    first, last = min(actual), max(actual)
    months = [
        live.month_name(i) for i in range(live.month_index(first), live.month_index(last) + 1)
    ]
    values = [
        *actual.values(),
        *(x for f in one for x in (f["price"], f.get("lower"), f.get("upper")) if x is not None),
    ]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or 1.0
    low, high = low - pad, high + pad
    left, right, top, bottom = 56, 12, 12, 28
    where = {m: i for i, m in enumerate(months)}

    def x(month: str) -> float:
        return round(left + where[month] * (width - left - right) / max(1, len(months) - 1), 1)

    def y(v: float) -> float:
        return round(top + (high - v) * (height - top - bottom) / (high - low), 1)

    step = (high - low) / 4
    return {
        "width": width,
        "height": height,
        "actual": " ".join(f"{x(m)},{y(v)}" for m, v in sorted(actual.items())),
        "served": [
            {
                "x": x(f["month"]),
                "y": y(f["price"]),
                "low": y(f["lower"]) if f.get("lower") is not None else None,
                "high": y(f["upper"]) if f.get("upper") is not None else None,
                "miss": f.get("inside") is False,
                "title": f"{f['month']}: {f['price']:.2f} by {f['version']}, actual "
                f"{f['actual']:.2f}",
            }
            for f in one
        ],
        "yticks": [(y(low + k * step), f"{low + k * step:.0f}") for k in range(5)],
        "xticks": [(x(m), m) for m in months if m.endswith("-01") or m == first],
        "bottom": height - bottom,
        "left": left,
    }


def accuracy(
    forecast: Mapping[str, Any], manifest: Mapping[str, Any], model: dict[str, Any]
) -> dict[str, Any] | None:
    """The backtest figures of the forecast the page shows: the path's one month ahead when
    that is what /forecast answers, else the forecast model's (None without figures)."""
    path = manifest.get("path")
    if forecast.get("source") == "path" and path and path["short"]["horizons"]:
        first = path["short"]["horizons"][0]
        return {
            "rmse": first["path"]["rmse"],
            "to_naive": first["path"]["rmse_to_naive"],
            "coverage": first["path"].get("coverage"),
            "coverage_band": first["path"].get("coverage_band"),
            "months": first["scored"],
        }
    naive = (model.get("naive") or {}).get("rmse")
    if not naive:
        return None
    return {
        "rmse": model["backtest"]["rmse"],
        "to_naive": model["backtest"]["rmse"] / naive,
        "coverage": (model.get("interval") or {}).get("coverage"),
        "coverage_band": None,
        "months": len((manifest.get("backtest") or {}).get("months") or []),
    }


def path_chart(path: Any, width: int = 900, height: int = 320) -> dict[str, Any] | None:
    """The geometry of the landing page's SVG chart: the recent prices, the forecast path and
    its band, scaled into ``width`` x ``height`` (None without a path)."""
    if not path or not path.get("history") or not path.get("months"):
        return None
    history = list(path["history"].items())
    months = path["months"]
    labels = [m for m, _ in history] + [m["month"] for m in months]
    values = [v for _, v in history] + [x for m in months for x in (m["lower"], m["upper"])]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or 1.0
    low, high = low - pad, high + pad
    left, right, top, bottom = 56, 12, 12, 28

    def x(i: int) -> float:
        return round(left + i * (width - left - right) / max(1, len(labels) - 1), 1)

    def y(v: float) -> float:
        return round(top + (high - v) * (height - top - bottom) / (high - low), 1)

    n = len(history)
    anchor = [(x(n - 1), y(history[-1][1]))]  # the path starts from the last known price
    line = anchor + [(x(n + i), y(m["price"])) for i, m in enumerate(months)]
    band = anchor + [(x(n + i), y(m["upper"])) for i, m in enumerate(months)]
    band += [(x(n + i), y(m["lower"])) for i, m in reversed(list(enumerate(months)))]
    step = (high - low) / 4
    return {
        "width": width,
        "height": height,
        "history": " ".join(f"{x(i)},{y(v)}" for i, (_, v) in enumerate(history)),
        "path": " ".join(f"{a},{b}" for a, b in line),
        "band": " ".join(f"{a},{b}" for a, b in band),
        "now": x(n - 1),
        "yticks": [(y(low + k * step), f"{low + k * step:.0f}") for k in range(5)],
        "xticks": [(x(i), m) for i, m in enumerate(labels) if m.endswith("-01")],
        "bottom": height - bottom,
        "left": left,
    }


def page(loaded: Loaded, base: str, ledger: Mapping[str, Any] | None = None) -> str:
    """The landing page of ``loaded``, its examples addressed to ``base``."""
    return str(_template().render(context(loaded, base, ledger)))


def chart(loaded: Loaded) -> tuple[bytes, str, str]:
    """The backtest chart's PNG, the version and an ETag; 404 if the model has none."""
    if loaded.chart is None:
        raise NotFound(f"model version {loaded.version} has no backtest chart")
    return loaded.chart, loaded.version, loaded.chart_sha256 or loaded.version
