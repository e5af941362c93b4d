"""`milkprice evaluate`'s horizon figures: the chosen path beside the naive forecast and
statsforecast's anchors, measured in the same run on exactly the same origins and targets.

The anchors run in their own environment (``anchors``); this side only hands them the price
series and the origins, and scores what comes back against the same months the training's
horizon backtest scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from milkprice.local import anchors


def price_series(raw: dict[str, bytes], today: Any) -> pd.Series:
    """The monthly price as training sees it (cleaned, on its monthly index)."""
    from milkprice.train import data
    from milkprice.train import features as F

    return F.build(data.clean(raw, F.REQUIRED_MACRO, today))[F.TARGET]


def _views(path: dict[str, Any]) -> dict[str, pd.PeriodIndex]:
    found = {"short": path["short"]}
    if path.get("long"):
        found["long"] = path["long"]
    return {
        name: pd.period_range(v["months"][0], v["months"][1], freq="M") for name, v in found.items()
    }


def measure(
    prices: pd.Series, path: dict[str, Any], arima: bool, root: Path
) -> dict[str, dict[str, list[float]]]:
    """Each anchor's RMSE per horizon on each view: view -> anchor -> [h=1, ..., H]."""
    from milkprice.train.horizons import contiguous_start

    start = contiguous_start(prices)
    known = prices.loc[start : prices.dropna().index.max()]
    horizon = len(path["short"]["horizons"])
    views = _views(path)
    first = min(v[0] for v in views.values())
    last = max(v[-1] for v in views.values())
    origins = list(range((first - start).n - horizon + 1, (last - start).n + 1))
    found = anchors.run(known.tolist(), origins, horizon, arima, root)
    y = known.to_numpy(float)
    scores: dict[str, dict[str, list[float]]] = {}
    for name, months in views.items():
        targets = np.array([(m - start).n for m in months])
        scores[name] = {}
        for anchor, forecasts in found["paths"].items():
            table = np.asarray(forecasts)
            rmse = []
            for h in range(1, horizon + 1):
                error = table[targets - h + 1 - origins[0], h - 1] - y[targets]
                rmse.append(float(np.sqrt(np.mean(error**2))))
            scores[name][anchor] = rmse
    return scores


def horizon_text(path: dict[str, Any], scores: dict[str, dict[str, list[float]]] | None) -> str:
    """Per horizon and view: the chosen path's RMSE, its coverage beside the band chance
    allows it (and whether it is inside), the naive forecast's RMSE, each anchor's, and
    whether the path is at most the best anchor's."""
    lines = []
    for name in ("short", "long"):
        view = path.get(name)
        if not view:
            continue
        found = (scores or {}).get(name, {})
        header = ["h", "path", "naive", "/naive", "coverage", "band", "in band"]
        header += [*found, "best anchor", "path <= best"]
        rows = []
        for i, figures in enumerate(view["horizons"]):
            own = figures["path"]
            best = min((r[i] for r in found.values()), default=float("nan"))
            rows.append(
                [
                    figures["horizon"],
                    f"{own['rmse']:.2f}",
                    f"{figures['naive']['rmse']:.2f}",
                    f"{own['rmse_to_naive']:.2f}",
                    f"{own['coverage']:.0%}",
                    *_band(own),
                    *(f"{r[i]:.2f}" for r in found.values()),
                    f"{best:.2f}" if found else "-",
                    ("yes" if own["rmse"] <= best else "NO") if found else "-",
                ]
            )
        months = view["months"]
        lines.append(
            f"forecast path, RMSE per horizon on {months[0]}..{months[1]} "
            f"({view['horizons'][0]['scored']} months each)"
        )
        lines.append(_table(rows, header))
        lines.append("")
    return "\n".join(lines)


def _band(figures: dict[str, Any]) -> list[str]:
    """The coverage band (both bounds inclusive) and whether the coverage is inside it; two
    dashes for figures written before the band was kept."""
    band = figures.get("coverage_band")
    if not band:
        return ["-", "-"]
    low, high = band
    inside = low <= figures["coverage"] <= high
    return [f"{low:.0%}-{high:.0%}", "yes" if inside else "NO"]


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
