"""The manifest's cross-field checks: a sound manifest passes, and each check, on its own,
refuses the one manifest that breaks only what it checks (so each test fails without it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pytest

from milkprice.contract import (
    BacktestInfo,
    ForecastPath,
    HorizonFigures,
    HorizonMetrics,
    HorizonView,
    Manifest,
    Metrics,
    ModelEntry,
    NextRow,
    PathMonth,
)
from milkprice.errors import LoadError
from milkprice.predict import checks

VERSION = "20261127T000000Z-abc123"
FIGURES = HorizonMetrics(rmse=1.0, mae=1.0, mape=1.0, rmse_to_naive=0.9)


def entry(role: str, features: list[str]) -> ModelEntry:
    metrics = Metrics(rmse=1.0, mae=1.0, mape=1.0)
    return ModelEntry(
        candidate=f"{role}_model",
        description="a model",
        features=features,
        onnx=f"{role}.onnx",
        skops=f"{role}.skops",
        training_rows=100,
        training_months=["2010-01", "2020-04"],
        backtest=metrics,
        naive=metrics,
        export_gap=0.0,
        sha256={f"{role}.onnx": f"{role}-onnx-sha", f"{role}.skops": f"{role}-skops-sha"},
    )


def view(horizons: int) -> HorizonView:
    return HorizonView(
        months=["2018-05", "2020-04"],
        horizons=[HorizonFigures(h, 24, FIGURES, FIGURES, {}) for h in range(1, horizons + 1)],
    )


def path(horizons: list[int], scored: int = 3) -> ForecastPath:
    months = [PathMonth(f"2020-{4 + h:02d}", h, 100.0, 90.0, 110.0) for h in horizons]
    return ForecastPath(0.8, "mean", {}, months, short=view(scored), long=view(scored))


def sound() -> Manifest:
    models = {"forecast": entry("forecast", ["a", "b"]), "legacy": entry("legacy", ["c"])}
    files = {name: sha for m in models.values() for name, sha in m.sha256.items()}
    return Manifest(
        version=VERSION,
        created="2026-11-27T00:00:00Z",
        run_id=VERSION,
        target="price",
        unit="CLP per litre",
        models=models,
        next=NextRow("2020-05", {"a": 1.0, "b": 2.0}),
        backtest=BacktestInfo(months=["2018-05", "2020-04"], method="rolling origin"),
        files=files,
        path=path([1, 2, 3]),
    )


def changed(doc: Manifest, **fields: Any) -> Manifest:
    return msgspec.structs.replace(doc, **fields)


def model(doc: Manifest, role: str, **fields: Any) -> Manifest:
    entry = msgspec.structs.replace(doc.models[role], **fields)
    return changed(doc, models={**doc.models, role: entry})


def test_a_sound_manifest_passes_and_so_does_one_without_a_path() -> None:
    checks.manifest(sound(), VERSION)
    checks.manifest(changed(sound(), path=None), VERSION)


def refused(doc: Manifest, problem: str, version: str = VERSION) -> None:
    with pytest.raises(LoadError, match=problem) as caught:
        checks.manifest(doc, version)
    assert caught.value.message.startswith(f"version {version}: ")


def test_the_manifest_is_of_the_version_it_was_found_under() -> None:
    refused(sound(), "its manifest is of version '20261127T000000Z-abc123'", "v2-copy")


def test_both_served_roles_have_a_model() -> None:
    doc = sound()
    refused(changed(doc, models={"forecast": doc.models["forecast"]}), "no legacy model")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: model(d, "legacy", sha256={}), "no sha256 for 'legacy.onnx'"),
        (lambda d: model(d, "forecast", onnx="../forecast.onnx"), "names no usable graph"),
        (
            lambda d: changed(d, files={**d.files, "forecast.onnx": "other"}),
            "two different sha256 for forecast.onnx",
        ),
    ],
)
def test_every_model_s_graph_is_a_file_with_one_sha256(
    edit: Callable[[Manifest], Manifest], problem: str
) -> None:
    refused(edit(sound()), problem)


def test_every_model_names_its_features_once() -> None:
    refused(model(sound(), "legacy", features=[]), "legacy model has no usable feature names")
    refused(model(sound(), "forecast", features=["a", "a"]), "repeats a feature name")


def test_the_next_row_has_every_feature_of_the_forecast_model() -> None:
    doc = sound()
    refused(changed(doc, next=NextRow("2020-05", {"a": 1.0})), "next row has no value of b")


def test_the_forecast_path_s_months_are_its_horizons_in_order() -> None:
    refused(changed(sound(), path=path([1, 3, 2])), r"path's horizons are \[1, 3, 2\]")
    refused(changed(sound(), path=path([2, 3])), r"path's horizons are \[2, 3\]")


def test_every_horizon_of_the_path_has_its_backtest_figures() -> None:
    refused(changed(sound(), path=path([1, 2, 3], scored=2)), r"no figures of horizons \[3\]")


def test_a_version_name_is_one_safe_path_segment() -> None:
    assert checks.valid_version(VERSION) and checks.valid_version("v1.2_rc-3")
    for bad in ("../v1", "a/b", "", ".hidden", "a..b", "x" * 129):
        assert not checks.valid_version(bad), bad


def test_finite_values_pass_even_when_their_sum_overflows_and_others_are_named() -> None:
    from milkprice.errors import BadRequest
    from milkprice.predict.model import check_finite

    features = ("a", "b", "c")
    check_finite(np.array([[1e308, 1e308, -1.0]]), features, None)  # sum: inf, values fine
    for bad, column in ((np.nan, 1), (np.inf, 2), (-np.inf, 0)):
        X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        X[1, column] = bad
        with pytest.raises(BadRequest, match=f"row 7: {features[column]} is not a finite"):
            check_finite(X, features, [3, 7])
