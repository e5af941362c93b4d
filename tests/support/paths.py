"""Where things are: the checkout, the real data beside it, the test data kept in the tree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tests/support/paths.py -> the checkout
SHARED = ROOT.parent / "shared" / "data" / "milk-price-chile"  # the real data, when present
LEGACY_X = SHARED / "legacy-features" / "X.csv"  # the old system's training rows
RELEASE = ROOT / "tests" / "data" / "release-0.1.0"  # files the first release wrote
PREDICT_MAIN = ROOT / "functions" / "predict" / "main.py"
TRAIN_MAIN = ROOT / "functions" / "train" / "main.py"
