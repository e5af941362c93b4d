"""``make bundle``: self-contained function source folders in dist/train and dist/predict.

Each holds ``main.py`` (the entry point), the shared package (for predict only its light
modules) and a ``requirements.txt`` exported from uv.lock: every package the function needs,
the SDK of the cloud asked for among them (``--cloud gcp|aws|azure``, default gcp), each
pinned with the hashes of its files, so that ``pip install -r`` checks every download against
the lock. Exactly what ``gcloud functions deploy --source dist/<name>`` uploads, or what any
platform installs.

``--runtime lambda`` (with ``--cloud aws``) writes AWS Lambda zip packages instead,
``dist/<name>-lambda.zip``: the same folder with the Lambda handler (``lambda_function.py``)
and every package of its requirements installed beside it by uv, each hash checked, as
manylinux wheels for Lambda's ``python3.12`` on x86_64 (``manylinux_2_28``: numpy's wheels
need glibc 2.28, and python3.12 runs on Amazon Linux 2023, glibc 2.34). The AWS SDK is not in
them but in a layer both functions share, ``dist/aws-sdk-layer.zip``: with it the predict zip
is over the 50 MB of a direct upload. Lambda's limit is 250 MB unzipped, function and layers
together: the predict function fits; the train function's packages (pandas, scipy,
scikit-learn, onnx, matplotlib) are twice that, so train stays on its container image and only
its size is reported.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "milkprice"
# Each function's bundle is derived from the package's layout: the shared contract (every
# module at the top of the package) and that function's own subpackage. The predict side
# imports neither the training side nor the local tooling (a test reads the imports), so its
# bundle carries neither them nor pandas and scikit-learn.
SIDES = {"predict": ((), "predict"), "train": (("train",), "train")}


SIDE_FOLDERS = ("predict", "train", "bridge", "local")
# AWS Lambda: the runtime and machine the zip packages are built for, and their size limits
LAMBDA_PYTHON = "3.12"
LAMBDA_PLATFORM = "x86_64-manylinux_2_28"
UNZIPPED_LIMIT = 250 * 2**20  # the function and its layers, unzipped
UPLOAD_LIMIT = 50 * 2**20  # a zip uploaded directly; a larger one goes through S3
# The layer of the AWS SDK: boto3 and the packages only it needs. A layer of the locked
# release, not the copy Lambda's runtime carries: the store's conditional writes need a recent
# botocore, and the runtime's is whichever AWS last put there.
LAYER = "aws-sdk-layer"
LAYER_ROOTS = ("boto3",)


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


def core_dependencies() -> tuple[str, ...]:
    """The names of the project's core dependencies, as pyproject.toml declares them."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        declared = tomllib.load(f)["project"]["dependencies"]
    return tuple(re.split(r"[=<>!~\[; ]", d, maxsplit=1)[0] for d in declared)


def requirements(extras: tuple[str, ...], prune: tuple[str, ...] = ()) -> str:
    """The requirements.txt of the core dependencies and ``extras``, from the lock with hashes
    (the project itself left out: the bundle carries its source); each package of ``prune``
    left out with what only it needs."""
    command = [find_uv_bin(), "export", "--locked", "--no-emit-project", "--quiet"]
    for extra in extras:
        command += ["--extra", extra]
    for name in prune:
        command += ["--prune", name]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # a lock out of date with pyproject.toml, say: uv says which
        raise SystemExit(f"uv export failed:\n{done.stderr}")
    return done.stdout


def bundle(name: str, out: Path, cloud: str = "gcp", runtime: str = "functions") -> Path:
    """The source folder of function ``name`` (``runtime`` lambda: with its Lambda handler,
    apig-wsgi among its requirements and the AWS SDK left to its layer) in ``out``."""
    target = out / (name if runtime == "functions" else f"{name}-lambda")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    entries = ["main.py"] + (["lambda_function.py"] if runtime == "lambda" else [])
    for entry in entries:
        shutil.copy(ROOT / "functions" / name / entry, target / entry)
    extras, side = SIDES[name]
    for relative in package_files(side):
        (target / "milkprice" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE / relative, target / "milkprice" / relative)
    # the cloud's extra: its SDK, and no other cloud's
    lambda_extra = ("lambda",) if runtime == "lambda" else ()
    prune = LAYER_ROOTS if runtime == "lambda" else ()
    (target / "requirements.txt").write_text(requirements((*extras, cloud, *lambda_extra), prune))
    return target


@dataclass(frozen=True)
class Package:
    """A Lambda zip package (a function's or a layer's) and its sizes in bytes."""

    path: Path | None  # None: not written, over the limit
    zipped: int
    unzipped: int
    layers: int = 0  # the unzipped size of the layers it runs with


def install(
    requirements_txt: Path,
    target: Path,
    python: str = LAMBDA_PYTHON,
    platform: str = LAMBDA_PLATFORM,
) -> int:
    """Every package of ``requirements_txt``, installed into ``target`` for ``python`` on
    ``platform`` from wheels only, each hash checked; the size in bytes of ``target``."""
    command = [find_uv_bin(), "pip", "install", "--quiet", "--require-hashes", "--no-deps"]
    command += ["--only-binary", ":all:", "--python-version", python]
    command += ["--python-platform", platform, "--link-mode", "copy", "--target", str(target)]
    done = subprocess.run([*command, "-r", str(requirements_txt)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"uv pip install into {target} failed:\n{done.stderr}")
    return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())


def write_zip(folder: Path, path: Path) -> int:
    """``folder`` as a zip at ``path``, the same bytes for the same files (sorted, dated
    1980-01-01, modes kept); its size in bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for file in files:
            info = zipfile.ZipInfo(file.relative_to(folder).as_posix(), (1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | (file.stat().st_mode & 0o777)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, file.read_bytes(), compresslevel=9)
    return path.stat().st_size


def _fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def lambda_layer(
    out: Path, python: str = LAMBDA_PYTHON, platform: str = LAMBDA_PLATFORM
) -> Package:
    """``out/aws-sdk-layer.zip``: boto3 and what only it needs, under ``python/`` (the folder
    Lambda puts on the path of every function using the layer)."""
    folder = _fresh(out / "lambda" / LAYER)
    (folder / "python").mkdir(parents=True)
    requirements_txt = out / "lambda" / f"{LAYER}.txt"
    # the aws extra with every core dependency pruned: only the SDK's own tree is left
    requirements_txt.write_text(requirements(("aws",), core_dependencies()))
    unzipped = install(requirements_txt, folder / "python", python, platform)
    path = _fresh(out / f"{LAYER}.zip")
    return Package(path, write_zip(folder, path), unzipped)


def lambda_zip(
    name: str,
    out: Path,
    python: str = LAMBDA_PYTHON,
    platform: str = LAMBDA_PLATFORM,
    layers: int = 0,
) -> Package:
    """``out/<name>-lambda.zip``, if the function with its packages and its layers (``layers``
    bytes unzipped) fits Lambda's 250 MB."""
    folder = bundle(name, out / "lambda", "aws", "lambda")
    unzipped = install(folder / "requirements.txt", folder, python, platform)
    path = _fresh(out / f"{name}-lambda.zip")
    if unzipped + layers > UNZIPPED_LIMIT:
        return Package(None, 0, unzipped, layers)
    return Package(path, write_zip(folder, path), unzipped, layers)


def lambda_packages(
    out: Path, python: str = LAMBDA_PYTHON, platform: str = LAMBDA_PLATFORM
) -> dict[str, Package]:
    """The AWS SDK's layer and both functions' zips (train's only if it fits, never yet)."""
    sdk = lambda_layer(out, python, platform)
    zips = {n: lambda_zip(n, out, python, platform, sdk.unzipped) for n in ("predict", "train")}
    return {LAYER: sdk, **zips}


def _report(name: str, found: Package) -> str:
    mb = 2**20
    total = found.unzipped + found.layers
    if found.path is None:
        return (
            f"{name}: {total / mb:.0f} MB unzipped with its packages and layer, over Lambda's "
            f"{UNZIPPED_LIMIT / mb:.0f} MB: no zip; deploy its container image (README)"
        )
    how = "direct upload" if found.zipped <= UPLOAD_LIMIT else "upload through S3"
    layer = f", {total / mb:.1f} MB with its layer" if found.layers else ""
    return (
        f"wrote {found.path.relative_to(ROOT)}: {found.zipped / mb:.1f} MB zipped ({how}), "
        f"{found.unzipped / mb:.1f} MB unzipped{layer}, of Lambda's {UNZIPPED_LIMIT / mb:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cloud", choices=("gcp", "aws", "azure"), default="gcp")
    parser.add_argument("--runtime", choices=("functions", "lambda"), default="functions")
    args = parser.parse_args(argv)
    out = ROOT / "dist"
    if args.runtime == "lambda":
        if args.cloud != "aws":
            parser.error("--runtime lambda packages for AWS Lambda: use it with --cloud aws")
        found = lambda_packages(out)
        for name, package in found.items():
            print(_report(name, package))
        return 0 if found["predict"].path else 1
    for name in ("train", "predict"):
        print(f"wrote {bundle(name, out, args.cloud).relative_to(ROOT)}/ ({args.cloud})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
