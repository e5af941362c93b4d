"""What an image runs, read from its Dockerfile: build arguments, environment, the extras its
``pip install`` names, and its command (exec form), ``${VAR}`` resolved as Docker does."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import ROOT

VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Image:
    args: dict[str, str]  # build arguments and their values
    env: dict[str, str]  # the image's environment
    extras: tuple[str, ...]  # of the project's `pip install ".[...]"`
    command: list[str]  # CMD, exec form
    copied_from: tuple[str, ...]  # images of COPY --from


def _lines(text: str) -> list[str]:
    """Instructions, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def _resolve(value: str, known: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: known.get(m.group(1) or m.group(2), ""), value)


def read(path: str | Path, build_args: dict[str, str] | None = None) -> Image:
    """The image ``path`` (relative to the checkout) builds with ``build_args``."""
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    extras: tuple[str, ...] = ()
    command: list[str] = []
    copied: list[str] = []
    for line in _lines((ROOT / path).read_text()):
        word, _, rest = line.partition(" ")
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = (build_args or {}).get(name, default)
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, value = pair.split("=", 1)
                env[key] = _resolve(value, {**args, **env})
        elif word == "RUN" and "pip install" in rest:
            found = re.search(r"\.\[([^\]]*)\]", _resolve(rest, {**args, **env}))
            extras = tuple(e for e in found.group(1).split(",") if e) if found else ()
        elif word == "COPY" and rest.startswith("--from="):
            copied.append(rest.split()[0].removeprefix("--from="))
        elif word == "CMD":
            command = list(json.loads(rest))
    assert command, f"{path} has no CMD in exec form"
    return Image(args, env, extras, command, tuple(copied))
