"""``make bundle``: self-contained Cloud Functions source folders in dist/train and dist/predict.

Each holds ``main.py`` (the entry point), the shared package (for predict only its light
modules) and a ``requirements.txt`` pinned from pyproject.toml: exactly what
``gcloud functions deploy --source dist/<name>`` uploads.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "milkprice"
# Serving never imports pandas or scikit-learn: its bundle carries neither them nor the
# modules that import them.
PREDICT_MODULES = (
    "__init__",
    "schema",
    "settings",
    "errors",
    "store",
    "logs",
    "serving",
    "rows",
    "openapi",
)


def requirements(extras: tuple[str, ...]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


def bundle(name: str, out: Path) -> Path:
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    (target / "milkprice").mkdir(parents=True)
    shutil.copy(ROOT / "functions" / name / "main.py", target / "main.py")
    if name == "predict":
        for module in PREDICT_MODULES:
            shutil.copy(PACKAGE / f"{module}.py", target / "milkprice" / f"{module}.py")
        for extra in PACKAGE.glob("*.html"):
            shutil.copy(extra, target / "milkprice" / extra.name)
        reqs = requirements(())
    else:
        for module in PACKAGE.glob("*.py"):
            shutil.copy(module, target / "milkprice" / module.name)
        reqs = requirements(("train",))
    (target / "requirements.txt").write_text("\n".join(reqs) + "\n")
    return target


def main() -> int:
    out = ROOT / "dist"
    for name in ("train", "predict"):
        print(f"wrote {bundle(name, out).relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
