"""Every install comes from uv.lock, with hashes: the lock matches pyproject.toml, and the
Makefile's venvs, the images and the bundles all install from it (uv reads the lock; no
server, no install)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from milkprice.bridge import shapes as event_shapes
from milkprice.local.object_stores import azurite
from tests.support import dockerfile, lock
from tests.support.paths import ROOT

sys.path.insert(0, str(ROOT / "infra"))
import bundle

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
IMAGES = ("train", "predict")
CLOUDS = ("gcp", "aws", "azure")
# a base pinned to a patch release of Python, on a named Debian release
PINNED_BASE = re.compile(r"^python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?$")


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _pinned(requirements: list[str]) -> dict[str, str]:
    """pyproject's ``name==version`` pins by name (the project's own extras left out)."""
    found: dict[str, str] = {}
    for text in requirements:
        r = Requirement(text)
        if canonicalize_name(r.name) != "milkprice":
            (spec,) = r.specifier
            found[canonicalize_name(r.name)] = spec.version
    return found


# emulators only: what the `local` extra adds beyond the scheduler of `events`
EMULATORS = _names(EXTRAS["local"]) - _names(EXTRAS["events"]) - {"milkprice"}


def _from_the_lock(requirements: str, direct: list[str]) -> dict[str, dict[str, int]]:
    """An exported requirements file's pins, checked: every one is a version of the lock
    with at least one hash, and each of ``direct`` (pyproject's) is there at its pin."""
    pins = lock.pins(requirements)
    named = lock.requirement_lines(requirements)
    assert sum(map(len, pins.values())) == len(named), f"not all pinned and hashed: {named}"
    locked = lock.locked()
    for name, versions in pins.items():
        for version, hashes in versions.items():
            assert version in locked.get(name, set()), f"{name}=={version} is not in uv.lock"
            assert hashes, f"{name} has no hash"
    for name, version in _pinned(direct).items():
        assert set(pins.get(name, {})) == {version}, f"{name}: pyproject pins {version}"
    return pins


def test_the_lock_is_up_to_date_with_pyproject() -> None:
    # without the network when it is (uv then checks the lock's own record of pyproject)
    lock.uv("lock", "--check")


def test_uv_is_bootstrapped_at_the_release_the_lock_holds() -> None:
    text = (ROOT / "infra" / "uv-requirements.txt").read_text()
    pins = lock.pins(text)
    assert set(pins) == {"uv"}, pins
    ((version, hashes),) = pins["uv"].items()
    assert hashes >= 2  # a wheel per platform: Linux x86_64 and arm64 at least
    assert _pinned(EXTRAS["dev"])["uv"] == version
    assert lock.locked()["uv"] == {version}
    # the build backend the images build the wheel with is the one pyproject builds with
    (build,) = PYPROJECT["dependency-groups"]["build"]
    assert PYPROJECT["build-system"]["requires"] == [build]


def _make(*targets: str) -> str:
    """The commands `make` would run for ``targets``, everything taken as out of date."""
    done = subprocess.run(
        ["make", "--dry-run", "--always-make", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.replace("\\\n", " ")  # a recipe's continued lines, as one


def test_the_makefile_s_venvs_come_from_the_lock() -> None:
    commands = _make("evaluate").splitlines()
    pip = [c for c in commands if "pip install" in c]
    assert pip and all("--require-hashes" in c and "infra/uv-requirements.txt" in c for c in pip)
    syncs = [c for c in commands if " sync " in c]
    assert len(syncs) == 2 and all("uv sync --locked" in c for c in syncs), syncs
    main, eval_ = syncs
    assert "--extra eval" not in main and "--extra train" in main and "--extra local" in main
    assert eval_.startswith("UV_PROJECT_ENVIRONMENT=.venv-eval ") and "--extra eval" in eval_
    assert "--extra train" not in eval_


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("name", ["train", "predict"])
def test_every_bundle_s_requirements_are_the_lock_s_with_hashes(name: str, cloud: str) -> None:
    extras = (*bundle.SIDES[name][0], cloud)
    direct = PYPROJECT["project"]["dependencies"] + [r for e in extras for r in EXTRAS[e]]
    pins = _from_the_lock(bundle.requirements(extras), direct)
    assert not EMULATORS & set(pins) and "apscheduler" not in pins
    if name == "predict":
        assert not {"pandas", "scikit-learn", "scipy"} & set(pins)


def test_the_lambda_zip_s_requirements_are_the_lock_s_with_hashes(tmp_path: Path) -> None:
    """What `make bundle CLOUD=aws RUNTIME=lambda` installs into the predict zip: the lock's
    pins with their hashes, apig-wsgi among them; no runtime interface client (Lambda's
    runtime has its own), no emulator, nothing of the training side, no other cloud's SDK,
    and not the AWS SDK either: that is the layer's, which holds it and nothing else."""
    folder = bundle.bundle("predict", tmp_path, "aws", "lambda")
    assert (folder / "lambda_function.py").is_file() and (folder / "main.py").is_file()
    direct = PYPROJECT["project"]["dependencies"] + EXTRAS["lambda"]
    pins = _from_the_lock((folder / "requirements.txt").read_text(), direct)
    assert "apig-wsgi" in pins and "onnxruntime" in pins
    sdks = {"boto3", "botocore", "s3transfer", "google-cloud-storage", "azure-storage-blob"}
    assert not (EMULATORS | sdks | {"pandas", "scikit-learn", "scipy"}) & set(pins)
    layer = _from_the_lock(bundle.requirements(("aws",), bundle.core_dependencies()), EXTRAS["aws"])
    assert {"boto3", "botocore", "s3transfer"} <= set(layer)
    # a package both need (urllib3) is the same release in both: the function's copy wins
    assert all(layer[name] == pins[name] for name in set(layer) & set(pins))


def _image(name: str, cloud: str) -> dockerfile.Image:
    return dockerfile.read(f"infra/{name}.Dockerfile", {"CLOUD": cloud})


def _requirements_export(image: dockerfile.Image) -> list[str]:
    """The arguments of the image's `uv export` of its requirements (not of its build
    backend), its output file left out."""
    (found,) = [e for e in image.exports if "--only-group" not in e]
    args = list(found[2:])
    out = args.index("-o")
    return args[:out] + args[out + 2 :]


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("name", IMAGES)
def test_each_image_installs_the_lock_s_packages_with_their_hashes(name: str, cloud: str) -> None:
    image = _image(name, cloud)
    assert image.exports, "the image exports nothing from the lock"
    for export in image.exports:
        assert "--locked" in export and "--no-hashes" not in export, export
    # every pip install checks hashes, but the project's own wheel, built in the image
    for install in image.pip_installs:
        hashed = "--require-hashes" in install and "-r" in install
        own_wheel = "--no-deps" in install and install[-1].endswith(".whl")
        assert hashed or own_wheel, install
    extras = image.extras
    assert cloud in extras
    direct = PYPROJECT["project"]["dependencies"] + [r for e in extras for r in EXTRAS[e]]
    pins = _from_the_lock(lock.export(*_requirements_export(image)), direct)
    assert not EMULATORS & set(pins), f"emulators in the {name} image: {EMULATORS & set(pins)}"
    if name == "train":
        assert "local" not in extras and "apscheduler" in pins
    else:
        assert not {"pandas", "scikit-learn", "apscheduler"} & set(pins)


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_runs_as_a_user_of_its_own_on_a_pinned_base(name: str) -> None:
    image = _image(name, "gcp")
    assert image.user and image.user.split(":")[0] not in ("root", "0"), image.user
    # numeric, so that Kubernetes' runAsNonRoot can tell
    assert all(part.isdigit() for part in image.user.split(":")), image.user
    assert image.bases and all(PINNED_BASE.match(b) for b in image.bases), image.bases
    assert len(set(image.bases)) == 1, "the stages build on different bases"
    for copied in image.copied_from:  # the Lambda adapter: a release, not a moving tag
        assert re.search(r":\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$", copied), copied
    assert image.bases == _image("train" if name == "predict" else "predict", "gcp").bases


# what `milkprice events` and the upload bridge import, in the train image
BRIDGE_MODULES = (
    "milkprice.local.cli",
    "milkprice.bridge",
    "milkprice.local.scheduler",
    "milkprice.local.processes",
    "milkprice.local.s3_queue",
)


def _imported_by(modules: tuple[str, ...]) -> set[str]:
    """Every module that importing ``modules`` loads in a fresh interpreter, beyond those
    it loads at start (the site hooks of the venv's own packages)."""
    code = (
        "import importlib, json, sys\n"
        "started = set(sys.modules)\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - started)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def _distributions(modules: set[str]) -> set[str]:
    top = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"milkprice"}
    owners = importlib.metadata.packages_distributions()
    return {canonicalize_name(d) for m in top for d in owners.get(m, [])}


def test_the_bridge_and_the_scheduler_need_only_the_train_image_s_packages() -> None:
    loaded = _imported_by(BRIDGE_MODULES)
    local_only = {f"milkprice.local.{m}" for m in ("emulators", "emulator", "storage")}
    assert not local_only & loaded, f"the bridge imports {local_only & loaded}"
    needed = _distributions(loaded)
    assert "apscheduler" in needed  # the check sees third-party imports at all
    image = lock.pins(lock.export(*_requirements_export(_image("train", "gcp"))))
    assert needed <= set(image), f"not in the train image: {needed - set(image)}"
    assert event_shapes.ACCOUNT == azurite.ACCOUNT
