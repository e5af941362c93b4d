"""uv.lock and what is exported from it: the pins and hashes of a requirements file, the
lock's own packages, and a fresh venv installed from it as the images install theirs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

from tests.support.paths import ROOT

LOCK = ROOT / "uv.lock"
# one requirement of an exported file: "name==version ; marker \" and its "--hash=" lines
ENTRY = re.compile(
    r"^(?P<req>[A-Za-z0-9][^\s\\]*==[^\s\\;]+(?: ; [^\\\n]+)?)"
    r"(?P<rest>(?:\s*\\\n\s+--hash=\S+)*)",
    re.M,
)


def uv(*args: str, cwd: Path = ROOT) -> str:
    """uv's output; its error message (a stale lock, say) when it fails."""
    done = subprocess.run([find_uv_bin(), *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"uv {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def export(*args: str) -> str:
    """``uv export`` with ``args`` (an image's own command, ``-o`` left out), as text."""
    return uv("export", "--quiet", *args)


def pins(requirements: str) -> dict[str, dict[str, int]]:
    """The requirements of an exported file: each package's versions (one per Python version
    where they differ, under markers) and the number of hashes of each."""
    found: dict[str, dict[str, int]] = {}
    for match in ENTRY.finditer(requirements):
        requirement = Requirement(match.group("req"))
        (spec,) = requirement.specifier
        versions = found.setdefault(canonicalize_name(requirement.name), {})
        versions[spec.version] = match.group("rest").count("--hash=sha256:")
    return found


def requirement_lines(requirements: str) -> list[str]:
    """The lines that name a package (neither comments nor hash continuations)."""
    return [
        line
        for line in requirements.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "--hash"))
    ]


def locked() -> dict[str, set[str]]:
    """Every package of the lock and its versions (a package may have one per fork)."""
    found: dict[str, set[str]] = {}
    for package in tomllib.loads(LOCK.read_text())["package"]:
        found.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    return found


def install(requirements: Path, python: Path) -> None:
    """Into the venv of ``python``: every package of ``requirements``, each hash checked."""
    uv(
        "pip",
        "install",
        "--quiet",
        "--require-hashes",
        f"--python={python}",
        f"--requirements={requirements}",
    )
