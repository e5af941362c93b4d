"""The tree shows the architecture, and the imports keep to it.

The top of the package is the contract both functions share; ``predict/`` is the predict side,
``train/`` the training side, ``bridge/`` the upload bridge (deployed beside the functions,
from the train image), ``local/`` the local tooling. The predict side must stay light
(no pandas or scikit-learn) and must not reach into the training side or the local tooling;
the contract reaches into no side at all. These tests read every import, lazy ones included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.support.paths import ROOT

sys.path.insert(0, str(ROOT / "infra"))
import bundle

PACKAGE = ROOT / "milkprice"
HEAVY = ("pandas", "sklearn", "scipy", "skl2onnx", "onnx", "skops", "matplotlib")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code, as absolute names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offending(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in files:
        hits = sorted(
            name
            for name in imports(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


def predict_side() -> list[Path]:
    return [
        *sorted(PACKAGE.glob("*.py")),
        *sorted((PACKAGE / "predict").rglob("*.py")),
        ROOT / "functions" / "predict" / "main.py",
    ]


def test_the_predict_side_imports_nothing_heavy_nor_the_other_sides() -> None:
    forbidden = ("milkprice.train", "milkprice.local", "milkprice.bridge", *HEAVY)
    assert offending(predict_side(), forbidden) == {}


def test_the_contract_reaches_into_no_side() -> None:
    sides = ("milkprice.train", "milkprice.local", "milkprice.predict", "milkprice.bridge")
    assert offending(sorted(PACKAGE.glob("*.py")), sides) == {}


def test_the_training_side_does_not_depend_on_the_local_tooling() -> None:
    files = [*sorted((PACKAGE / "train").rglob("*.py")), ROOT / "functions" / "train" / "main.py"]
    assert offending(files, ("milkprice.local", "milkprice.predict")) == {}


def test_both_sides_reach_the_bucket_through_the_contract_alone() -> None:
    """One door: what the sides read and write is the contract's to name, type and order;
    ``store`` is the adapter under it, not a second way in."""
    files = [
        *sorted((PACKAGE / "train").rglob("*.py")),
        *sorted((PACKAGE / "predict").rglob("*.py")),
    ]
    assert offending(files, ("milkprice.store",)) == {}


def test_the_bridge_is_deployed_so_it_needs_no_side_and_no_local_tooling() -> None:
    files = sorted((PACKAGE / "bridge").rglob("*.py"))
    sides = ("milkprice.local", "milkprice.train", "milkprice.predict")
    assert files and offending(files, sides) == {}


def test_the_check_can_fail() -> None:
    """The reader sees lazy imports inside functions, which is where a slip would hide."""
    found = offending([PACKAGE / "local" / "cli.py"], ("milkprice.train", "milkprice.local.stack"))
    assert set(found["milkprice/local/cli.py"]) >= {"milkprice.local.stack", "milkprice.train"}


def test_the_predict_bundle_is_the_contract_and_the_predict_side() -> None:
    files = {str(p) for p in bundle.package_files("predict")}
    assert "predict/serving.py" in files and "predict/landing.html" in files
    assert "predict/routes.py" in files and "predict/forwarded.py" in files
    assert ("settings.py" in files and "store.py" in files) or "store/__init__.py" in files
    assert not any(f.startswith(("train/", "local/", "bridge/")) for f in files)
    assert {str(p.relative_to(PACKAGE)) for p in predict_side()[:-1]} <= files


def test_every_module_is_in_a_known_place() -> None:
    """A new module lands in the contract or in one of the three sides, nowhere else."""
    folders = {p.parent.relative_to(PACKAGE).parts[:1] for p in PACKAGE.rglob("*.py")}
    assert folders <= {(), ("predict",), ("train",), ("bridge",), ("local",), ("store",)}
