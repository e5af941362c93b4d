"""Model files: ONNX to serve, skops to keep. Never pickle or joblib.

The ONNX graph takes one input ``X``, a float64 tensor ``[N, F]`` with the model's features in
manifest order, and gives one output ``price`` ``[N, 1]``. The estimators of our own
(:class:`~milkprice.train.estimators.FixedLinear`,
:class:`~milkprice.train.estimators.ChangeRegressor`,
:class:`~milkprice.train.estimators.RatioRegressor`) get converters here; a model of the change
adds last month's price back inside the graph.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from typing import Any

import numpy as np
import onnxruntime as ort
import skops.io as sio
from onnx import TensorProto
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
from skl2onnx.algebra.onnx_ops import (
    OnnxAdd,
    OnnxCast,
    OnnxExp,
    OnnxGather,
    OnnxMatMul,
    OnnxMul,
)
from skl2onnx.common import tree_ensemble
from skl2onnx.common.data_types import DoubleTensorType
from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

from milkprice.errors import ExportError
from milkprice.train.estimators import ChangeRegressor, FixedLinear, RatioRegressor

INPUT = "X"
OUTPUT = "price"
OPSET = {"": 17, "ai.onnx.ml": 3}

# The only types a stored pipeline may contain; anything else refuses to load.
TRUSTED = [
    "milkprice.train.estimators.ChangeRegressor",
    "milkprice.train.estimators.FixedLinear",
    "milkprice.train.estimators.RatioRegressor",
    "milkprice.train.estimators.mutual_info",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.dummy.DummyRegressor",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn.feature_selection._univariate_selection.SelectKBest",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._polynomial.PolynomialFeatures",
    "numpy.dtype",
    "numpy.ndarray",
]


def _convert_fixed(scope: Any, operator: Any, container: Any) -> None:
    op: FixedLinear = operator.raw_operator
    opv = container.target_opset
    weights = np.asarray(op.coef_, dtype=np.float64).reshape(-1, 1)
    product = OnnxMatMul(operator.inputs[0], weights, op_version=opv)
    total = OnnxAdd(
        product,
        np.array([op.intercept_], dtype=np.float64),
        op_version=opv,
        output_names=operator.outputs[:1],
    )
    total.add_to(scope, container)


def _convert_change(scope: Any, operator: Any, container: Any) -> None:
    op: ChangeRegressor = operator.raw_operator
    opv = container.target_opset
    X = operator.inputs[0]
    sub = OnnxSubEstimator(op.regressor_, X, op_version=opv)
    # Tree ensembles may answer in float32; the sum is float64 either way.
    change = OnnxCast(
        sub,
        to=TensorProto.DOUBLE,
        op_version=opv,
    )
    base = OnnxGather(X, np.array([op.base], dtype=np.int64), axis=1, op_version=opv)
    total = OnnxAdd(change, base, op_version=opv, output_names=operator.outputs[:1])
    total.add_to(scope, container)


_add_node = tree_ensemble.add_node


def _add_node_int_flags(*args: Any, **kwargs: Any) -> Any:
    # skl2onnx 1.20 passes scikit-learn 1.9's boolean missing-value flags straight into an
    # ONNX int attribute, which onnx rejects; the flag means the same as 0 or 1.
    if "nodes_missing_value_tracks_true" in kwargs:
        kwargs["nodes_missing_value_tracks_true"] = int(kwargs["nodes_missing_value_tracks_true"])
    return _add_node(*args, **kwargs)


def _convert_ratio(scope: Any, operator: Any, container: Any) -> None:
    op: RatioRegressor = operator.raw_operator
    opv = container.target_opset
    X = operator.inputs[0]
    n = op.n_features_in_
    rest = OnnxGather(
        X, np.array([i for i in range(n) if i != op.base], dtype=np.int64), axis=1, op_version=opv
    )
    sub = OnnxSubEstimator(
        op.regressor_, rest, op_version=opv, input_types=[DoubleTensorType([None, n - 1])]
    )
    log_ratio = OnnxCast(sub, to=TensorProto.DOUBLE, op_version=opv)
    base = OnnxGather(X, np.array([op.base], dtype=np.int64), axis=1, op_version=opv)
    total = OnnxMul(
        OnnxExp(log_ratio, op_version=opv), base, op_version=opv, output_names=operator.outputs[:1]
    )
    total.add_to(scope, container)


_set_up: list[bool] = []


def set_up_export() -> None:
    """The export's one change to skl2onnx, made explicitly and once (``to_onnx`` calls it):
    the converters of our own estimators, and the tree flags' fix above. Importing this
    module changes nothing."""
    if _set_up:
        return
    tree_ensemble.add_node = _add_node_int_flags
    ours = (
        (RatioRegressor, "MilkPriceRatioRegressor", _convert_ratio),
        (FixedLinear, "MilkPriceFixedLinear", _convert_fixed),
        (ChangeRegressor, "MilkPriceChangeRegressor", _convert_change),
    )
    for estimator, alias, convert in ours:
        update_registered_converter(
            estimator, alias, calculate_linear_regressor_output_shapes, convert
        )
    _set_up.append(True)


def to_onnx(model: Any, n_features: int) -> bytes:
    set_up_export()
    onx = convert_sklearn(
        model,
        initial_types=[(INPUT, DoubleTensorType([None, n_features]))],
        final_types=[(OUTPUT, DoubleTensorType([None, 1]))],
        target_opset=OPSET,
    )
    return bytes(onx.SerializeToString())


def to_skops(model: Any) -> bytes:
    return bytes(sio.dumps(model))


# A stored pipeline names our own types by the module they lived in when it was saved: those of
# the first release say ``milkprice.model``, later ones ``milkprice.train.model`` (until the
# estimators got a module of their own). Both load as today's classes.
MOVED = {
    "milkprice.model": "milkprice.train.estimators",
    "milkprice.train.model": "milkprice.train.estimators",
}


def _alias_moved_modules() -> list[str]:
    """Stand a module in at each old path holding exactly the trusted names of its new module,
    so an old path reaches nothing else; return those names as the old paths spell them."""
    trusted: list[str] = []
    for old, new in MOVED.items():
        names = [t.rpartition(".")[2] for t in TRUSTED if t.rpartition(".")[0] == new]
        if old not in sys.modules:
            source = importlib.import_module(new)
            alias = types.ModuleType(old, f"the trusted types of {new}, for stored pipelines")
            for name in names:
                setattr(alias, name, getattr(source, name))
            sys.modules.setdefault(old, alias)
        trusted += [f"{old}.{name}" for name in names]
    return trusted


def from_skops(data: bytes) -> Any:
    """Load a stored pipeline, refusing any type outside ``TRUSTED`` (or its older paths)."""
    trusted = TRUSTED + _alias_moved_modules()
    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in trusted]
    if untrusted:
        raise ValueError(f"stored pipeline holds untrusted types: {untrusted}")
    return sio.loads(data, trusted=trusted)


def onnx_predict(data: bytes, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = session.run(None, {INPUT: np.asarray(X, dtype=np.float64)})[0]
    return np.ravel(out)


def verify(model: Any, onnx_bytes: bytes, skops_bytes: bytes, X: np.ndarray) -> float:
    """Largest relative gap between the fitted model, its ONNX graph and its skops copy.

    Raises when either copy disagrees with the fitted model beyond 1e-6: a model that would
    serve other numbers than the ones it was evaluated with is never written.
    """
    expected = np.ravel(model.predict(X))
    scale = np.maximum(np.abs(expected), 1.0)
    gap_onnx = float(np.max(np.abs(onnx_predict(onnx_bytes, X) - expected) / scale))
    gap_skops = float(
        np.max(np.abs(np.ravel(from_skops(skops_bytes).predict(X)) - expected) / scale)
    )
    gap = max(gap_onnx, gap_skops)
    if not gap <= 1e-6:
        raise ExportError(f"exported model disagrees with the fitted one (relative gap {gap:.2e})")
    return gap


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
