"""The anchors `make evaluate` measures the system against: statsforecast's models, run on
exactly the origins and horizons of the training's horizon backtest.

statsforecast needs pandas < 3, so it lives in an environment of its own (``.venv-eval``,
the ``eval`` extra) and this module runs there as a child process: the price series and the
origins go in as JSON on stdin, every anchor's forecasts come out as JSON on stdout. It
imports nothing of the training side; :func:`run` is the parent's side of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from milkprice.errors import MilkPriceError

SEASON = 12
EVAL_VENV = ".venv-eval"
ANCHORS = ("mstl_ets_log", "auto_ets", "auto_theta", "auto_ces")
SLOW = ("auto_arima", "mean_ets_arima_theta")  # behind --arima: AutoARIMA refits slowly


def _models(arima: bool) -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
    """Each anchor as a function of the known prices and the horizon."""
    from statsforecast.models import MSTL, AutoARIMA, AutoCES, AutoETS, AutoTheta

    def fit(model: Any, y: np.ndarray, h: int) -> np.ndarray:
        return np.asarray(model.forecast(y=y, h=h)["mean"], dtype=float)

    found: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "mstl_ets_log": lambda y, h: np.exp(
            fit(MSTL(season_length=SEASON, trend_forecaster=AutoETS(model="ZZN")), np.log(y), h)
        ),
        "auto_ets": lambda y, h: fit(AutoETS(season_length=SEASON), y, h),
        "auto_theta": lambda y, h: fit(AutoTheta(season_length=SEASON), y, h),
        "auto_ces": lambda y, h: fit(AutoCES(season_length=SEASON), y, h),
    }
    if arima:
        found["auto_arima"] = lambda y, h: fit(AutoARIMA(season_length=SEASON), y, h)
    return found


def forecasts(prices: list[float], origins: list[int], horizon: int, arima: bool) -> dict[str, Any]:
    """Every anchor's ``horizon`` forecasts from each origin (the index of the first month
    it does not see), fitted afresh on the prices before it; and each anchor's seconds."""
    y = np.asarray(prices, dtype=float)
    paths: dict[str, list[list[float]]] = {}
    seconds: dict[str, float] = {}
    for name, model in _models(arima).items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths[name] = [model(y[:o], horizon).tolist() for o in origins]
        seconds[name] = time.perf_counter() - start
    if arima:
        parts = [np.asarray(paths[n]) for n in ("auto_ets", "auto_arima", "auto_theta")]
        paths["mean_ets_arima_theta"] = np.mean(parts, axis=0).tolist()
    return {"paths": paths, "seconds": seconds}


def python(root: Path) -> Path:
    """The interpreter of the evaluation environment; a clear error when it is absent."""
    exe = root / EVAL_VENV / "bin" / "python"
    if not exe.exists():
        raise MilkPriceError(
            f"{exe} is missing: the anchors need statsforecast in an environment of its own "
            "(make evaluate creates it; or pass --no-anchors)"
        )
    return exe


def run(
    prices: list[float], origins: list[int], horizon: int, arima: bool, root: Path
) -> dict[str, Any]:
    """The anchors' forecasts, computed by this module in the evaluation environment."""
    doc = {"prices": prices, "origins": origins, "horizon": horizon, "arima": arima}
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [str(python(root)), "-m", "milkprice.local.anchors"],
        input=json.dumps(doc).encode(),
        capture_output=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise MilkPriceError("the anchors failed: " + " | ".join(tail))
    return dict(json.loads(done.stdout))


def main() -> int:
    doc = json.load(sys.stdin)
    answer = forecasts(doc["prices"], doc["origins"], int(doc["horizon"]), bool(doc["arima"]))
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
