"""``make bundle``: self-contained function source folders in dist/train and dist/predict.

Each holds ``main.py`` (the entry point), the shared package (for predict only its light
modules) and a ``requirements.txt`` exported from uv.lock: every package the function needs,
the SDK of the cloud asked for among them (``--cloud gcp|aws|azure``, default gcp), each
pinned with the hashes of its files, so that ``pip install -r`` checks every download against
the lock. Exactly what ``gcloud functions deploy --source dist/<name>`` uploads, or what any
platform installs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "milkprice"
# Each function's bundle is derived from the package's layout: the shared contract (every
# module at the top of the package) and that function's own subpackage. The predict side
# imports neither the training side nor the local tooling (a test reads the imports), so its
# bundle carries neither them nor pandas and scikit-learn.
SIDES = {"predict": ((), "predict"), "train": (("train",), "train")}


SIDE_FOLDERS = ("predict", "train", "local")


def package_files(side: str) -> list[Path]:
    """The package files a function's bundle carries, relative to the package folder: all of
    the contract (everything outside the sides' folders, the store's backends included) and
    the function's own side."""
    files = sorted(
        p.relative_to(PACKAGE)
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".html") and "__pycache__" not in p.parts
    )
    return [f for f in files if f.parts[0] not in SIDE_FOLDERS or f.parts[0] == side]


def requirements(extras: tuple[str, ...]) -> str:
    """The requirements.txt of the core dependencies and ``extras``, from the lock with hashes
    (the project itself left out: the bundle carries its source)."""
    command = [find_uv_bin(), "export", "--locked", "--no-emit-project", "--quiet"]
    for extra in extras:
        command += ["--extra", extra]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # a lock out of date with pyproject.toml, say: uv says which
        raise SystemExit(f"uv export failed:\n{done.stderr}")
    return done.stdout


def bundle(name: str, out: Path, cloud: str = "gcp") -> Path:
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy(ROOT / "functions" / name / "main.py", target / "main.py")
    extras, side = SIDES[name]
    for relative in package_files(side):
        (target / "milkprice" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE / relative, target / "milkprice" / relative)
    # the cloud's extra: its SDK (Cloud Storage's is a core dependency, its extra empty)
    (target / "requirements.txt").write_text(requirements((*extras, cloud)))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cloud", choices=("gcp", "aws", "azure"), default="gcp")
    cloud = parser.parse_args(argv).cloud
    out = ROOT / "dist"
    for name in ("train", "predict"):
        print(f"wrote {bundle(name, out, cloud).relative_to(ROOT)}/ ({cloud})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
