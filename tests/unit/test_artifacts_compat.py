"""Pipelines stored by earlier releases still load, as today's classes, and predict as served.

A skops file names each of our own types by the module it lived in when it was saved: the first
release's files say ``milkprice.model``, later ones ``milkprice.train.model``. The first
release's own files are kept in ``tests/data/release-0.1.0``; the later spelling is made here
by renaming the module inside a copy of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from milkprice.train import artifacts
from milkprice.train.estimators import RatioRegressor, mutual_info
from tests.support.paths import RELEASE

FIRST, PREVIOUS = "milkprice.model", "milkprice.train.model"


def manifest() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RELEASE / "manifest.json").read_text())
    return doc


def stored(name: str) -> bytes:
    """A file of the release, checked against the digest its manifest recorded."""
    payload = (RELEASE / name).read_bytes()
    assert hashlib.sha256(payload).hexdigest() == manifest()["files"][name]
    return payload


def renamed(payload: bytes, old: str, new: str, old_class: str = "", new_class: str = "") -> bytes:
    """The same skops file with the module ``old`` spelled ``new`` (and, when given, the class
    ``old_class`` spelled ``new_class``)."""
    source, out = zipfile.ZipFile(io.BytesIO(payload)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "schema.json":
                text = data.decode().replace(f'"__module__": "{old}"', f'"__module__": "{new}"')
                if old_class:
                    text = text.replace(
                        f'"__class__": "{old_class}"', f'"__class__": "{new_class}"'
                    )
                assert text.encode() != data
                data = text.encode()
            target.writestr(item, data)
    return out.getvalue()


def next_row() -> np.ndarray:
    """The manifest's next-month row, in the forecast model's feature order."""
    doc = manifest()
    features = doc["models"]["forecast"]["features"]
    return np.array([[doc["next"]["features"][f] for f in features]], dtype=np.float64)


@pytest.mark.parametrize("module", [FIRST, PREVIOUS])
def test_an_old_forecast_pipeline_predicts_as_its_onnx_graph(module: str) -> None:
    payload = stored("forecast.skops")
    if module != FIRST:
        payload = renamed(payload, FIRST, module)
    assert sio.get_untrusted_types(data=payload) == [f"{module}.RatioRegressor"]
    pipeline = artifacts.from_skops(payload)
    assert type(pipeline) is RatioRegressor  # today's class, not a copy under the old name
    row = next_row()
    served = artifacts.onnx_predict(stored("forecast.onnx"), row)
    np.testing.assert_allclose(np.ravel(pipeline.predict(row)), served, rtol=1e-6)


@pytest.mark.parametrize("module", [FIRST, PREVIOUS])
def test_an_old_legacy_pipeline_loads_with_todays_scoring_function(module: str) -> None:
    payload = stored("legacy.skops")
    if module != FIRST:
        payload = renamed(payload, FIRST, module)
    assert sio.get_untrusted_types(data=payload) == [f"{module}.mutual_info"]
    pipeline = artifacts.from_skops(payload)
    assert pipeline.named_steps["select"].score_func is mutual_info
    n = len(manifest()["models"]["legacy"]["features"])
    rows = np.random.default_rng(1).uniform(1.0, 300.0, (5, n))
    assert np.isfinite(pipeline.predict(rows)).all()


def test_a_stored_pipeline_with_an_untrusted_type_is_refused() -> None:
    # a pipeline whose transformer would call eval on the rows it is given
    hostile = Pipeline([("f", FunctionTransformer(eval)), ("ridge", Ridge())])
    with pytest.raises(ValueError, match=r"untrusted types: \['builtins.eval'\]"):
        artifacts.from_skops(sio.dumps(hostile))
    # an old path is no way in: it names only the trusted types of today's module
    sneaky = renamed(stored("forecast.skops"), FIRST, FIRST, "RatioRegressor", "_Hashed")
    with pytest.raises(ValueError, match="untrusted"):
        artifacts.from_skops(sneaky)
    for module in (FIRST, PREVIOUS):
        names = {n for n in vars(sys.modules[module]) if not n.startswith("__")}
        assert names == {"ChangeRegressor", "FixedLinear", "RatioRegressor", "mutual_info"}
