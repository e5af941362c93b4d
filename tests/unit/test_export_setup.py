"""Importing the training side changes no library: the export's set-up is an explicit step."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import ROOT

PROBE = """
from skl2onnx.common import tree_ensemble
original = tree_ensemble.add_node
from milkprice.train import artifacts
print(tree_ensemble.add_node is original)
artifacts.set_up_export()
print(tree_ensemble.add_node is original)
"""


def test_importing_artifacts_patches_nothing_and_set_up_does() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "False"]
