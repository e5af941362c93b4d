"""The train token ``make up`` keeps in var/train-token: readable by its owner alone from the
moment it exists, and an empty file is an error instead of a train function left open."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest

from milkprice.errors import MilkPriceError
from milkprice.local import cli, stack
from milkprice.settings import LocalSettings


class Stopped(Exception):
    """The process stopped at that point (a signal, a crash)."""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_file_is_private_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop between writing the file and narrowing its mode would leave it world-readable:
    the file must be created private, with no mode change after."""

    def stopped(*args: object, **kwargs: object) -> None:
        raise Stopped("stopped before the mode was changed")

    monkeypatch.setattr(Path, "chmod", stopped)
    monkeypatch.setattr(os, "chmod", stopped)
    old = os.umask(0o022)  # the usual umask, which leaves new files world-readable
    try:
        with contextlib.suppress(Stopped):
            stack.train_token(LocalSettings(), tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / "train-token"
    assert _mode(path) == 0o600, oct(_mode(path))
    token = path.read_text()
    assert len(token) >= 24
    # made once: the next start and the CLI use the same
    assert stack.train_token(LocalSettings(), tmp_path) == token
    assert cli._token(LocalSettings(state_dir=str(tmp_path))) == token


def test_a_configured_token_wins_and_no_file_is_made(tmp_path: Path) -> None:
    assert stack.train_token(LocalSettings(train_token="set"), tmp_path) == "set"
    assert not (tmp_path / "train-token").exists()
    assert cli._token(LocalSettings(state_dir=str(tmp_path))) == ""  # no file: no token to send


@pytest.mark.parametrize("content", ["", "\n", "  \n"])
def test_an_empty_token_file_is_an_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "train-token"
    path.write_text(content)
    for read in (
        lambda: stack.train_token(LocalSettings(), tmp_path),
        lambda: cli._token(LocalSettings(state_dir=str(tmp_path))),
    ):
        with pytest.raises(MilkPriceError) as caught:
            read()
        assert str(path) in caught.value.message
        assert "delete it" in caught.value.message
