"""What an image runs, read from its Dockerfile: build arguments, environment, the extras its
requirements are exported with from the lock, what it installs and how, its base, its user
and its command (exec form), ``${VAR}`` resolved as Docker does.

The images are built in two stages: the first exports the image's requirements from uv.lock
(``uv export``) and builds the project's wheel, the last installs them. Fields that describe
the running image (environment, user, command, copied images) are those of the last stage.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.paths import ROOT

VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Image:
    args: dict[str, str]  # build arguments and their values
    env: dict[str, str]  # the image's environment
    extras: tuple[str, ...]  # the pyproject extras of its `uv export`
    command: list[str]  # CMD, exec form
    copied_from: tuple[str, ...]  # images of COPY --from
    bases: tuple[str, ...] = ()  # the image of every FROM (stages named in the file left out)
    user: str = ""  # the last stage's USER: who the image runs as ("" for root, the default)
    exports: tuple[tuple[str, ...], ...] = ()  # every `uv export ...` command, as its argv
    pip_installs: tuple[tuple[str, ...], ...] = ()  # every `pip install ...`, as its argv
    stages: tuple[str, ...] = field(default=())  # the names of its stages (FROM ... AS name)


def _lines(text: str) -> list[str]:
    """Instructions, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def _resolve(value: str, known: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: known.get(m.group(1) or m.group(2), ""), value)


def commands(shell: str) -> list[list[str]]:
    """The simple commands of a RUN's shell line, split at ``&&`` and ``;``."""
    found: list[list[str]] = [[]]
    for word in shlex.split(shell):
        if word in ("&&", ";"):
            found.append([])
        else:
            found[-1].append(word)
    return [c for c in found if c]


def _is(command: list[str], *program: str) -> bool:
    """Whether ``command`` runs ``program`` (``pip install`` also as ``python -m pip``)."""
    words = command[2:] if command[:2] == ["python", "-m"] else command
    return tuple(words[: len(program)]) == program


def extras_of(export: tuple[str, ...]) -> tuple[str, ...]:
    """The extras a ``uv export`` command names (``--extra X``)."""
    return tuple(export[i + 1] for i, word in enumerate(export[:-1]) if word == "--extra")


@dataclass
class _Reading:
    """What has been read so far; a FROM starts the last stage's fields afresh."""

    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    user: str = ""
    exports: list[tuple[str, ...]] = field(default_factory=list)
    installs: list[tuple[str, ...]] = field(default_factory=list)

    def stage(self, rest: str) -> None:
        image, _, name = rest.partition(" AS ")
        if image.strip() not in self.stages:
            self.bases.append(image.strip())
        if name:
            self.stages.append(name.strip())
        self.env, self.command, self.copied, self.user = {}, [], [], ""

    def run(self, rest: str) -> None:
        for command in commands(_resolve(rest, {**self.args, **self.env})):
            if _is(command, "uv", "export"):
                self.exports.append(tuple(command))
            elif _is(command, "pip", "install"):
                self.installs.append(tuple(command))


def read(path: str | Path, build_args: dict[str, str] | None = None) -> Image:
    """The image ``path`` (relative to the checkout) builds with ``build_args``."""
    r = _Reading()
    for line in _lines((ROOT / path).read_text()):
        word, _, rest = line.partition(" ")
        if word == "FROM":
            r.stage(rest)
        elif word == "ARG":
            name, _, default = rest.partition("=")
            r.args[name] = (build_args or {}).get(name, default)
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, value = pair.split("=", 1)
                r.env[key] = _resolve(value, {**r.args, **r.env})
        elif word == "RUN":
            r.run(rest)
        elif word == "COPY" and rest.startswith("--from="):
            source = rest.split()[0].removeprefix("--from=")
            if source not in r.stages:
                r.copied.append(source)
        elif word == "USER":
            r.user = rest.strip()
        elif word == "CMD":
            r.command = list(json.loads(rest))
    assert r.command, f"{path} has no CMD in exec form"
    extras = tuple(dict.fromkeys(e for export in r.exports for e in extras_of(export)))
    return Image(
        r.args,
        r.env,
        extras,
        r.command,
        tuple(r.copied),
        tuple(r.bases),
        r.user,
        tuple(r.exports),
        tuple(r.installs),
        tuple(r.stages),
    )
