"""The README stays true where it can be checked."""

from __future__ import annotations

from milkprice.settings import LocalSettings, Settings
from tests.support.paths import ROOT

README = (ROOT / "README.md").read_text()


FUNCTIONS_TABLE = "### The functions' settings"
LOCAL_TABLE = "### The local stack's settings"


def _table(heading: str) -> list[str]:
    """The variables a settings table of the README lists, in order, repeats kept."""
    section = README.split(heading, 1)[1].split("\n#", 1)[0]
    return [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]


def test_settings_table_lists_every_setting_with_its_default() -> None:
    for variable, default, meaning in [*Settings.documented(), *LocalSettings.documented()]:
        assert f"| `{variable}` | `{default}` | {meaning} |" in README, variable


def test_each_settings_table_holds_exactly_its_own_settings() -> None:
    """The functions' table lists what ``Settings`` reads and the local stack's what
    ``LocalSettings`` adds: none missing, none twice, none in the other's table."""
    for heading, kind in ((FUNCTIONS_TABLE, Settings), (LOCAL_TABLE, LocalSettings)):
        listed = _table(heading)
        expected = [variable for variable, _, _ in kind.documented()]
        assert sorted(listed) == sorted(set(listed)), f"listed twice in {heading!r}"
        assert set(listed) == set(expected), (heading, set(listed) ^ set(expected))
    assert not set(_table(FUNCTIONS_TABLE)) & set(_table(LOCAL_TABLE))


def test_the_two_commands_and_the_layout() -> None:
    assert "make up" in README and "make test" in README
    for path in ("functions/train/main.py", "functions/predict/main.py", "docker-compose.yml"):
        assert path in README and (ROOT / path).exists(), path


def test_the_layout_block_names_only_files_that_exist_and_every_module() -> None:
    block = README.split("## Layout", 1)[1].split("```")[1]
    folder, named = ROOT, set()
    for line in block.strip().splitlines():
        first = line.strip().split("  ")[0]
        if not line.startswith(" "):
            folder = ROOT / first.rstrip("/") if first.endswith("/") else ROOT
            if not first.endswith("/"):
                assert (ROOT / first).exists(), first
            continue
        for name in first.split(", "):
            assert (folder / name).exists(), folder / name
            named.add(folder / name)
    modules = {p for p in (ROOT / "milkprice").rglob("*.py") if p.name != "__init__.py"}
    assert modules - named == set(), "modules the README's layout does not show"
