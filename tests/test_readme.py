"""The README stays true where it can be checked."""

from __future__ import annotations

from milkprice.settings import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_settings_table_lists_every_setting_with_its_default() -> None:
    for variable, default, meaning in Settings.documented():
        assert f"| `{variable}` | `{default}` | {meaning} |" in README, variable


def test_the_two_commands_and_the_layout() -> None:
    assert "make up" in README and "make test" in README
    for path in ("functions/train/main.py", "functions/predict/main.py", "docker-compose.yml"):
        assert path in README and (ROOT / path).exists(), path
    for module in ("settings", "errors", "store", "data", "features", "model", "training"):
        assert f"{module}.py" in README and (ROOT / "milkprice" / f"{module}.py").exists()
