"""The command-line programs: one module per CLI in ee_rl.cli, a console command for each, and scripts/<name>.py
running the same main()."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
MODULES = sorted(p.stem for p in (ROOT / "ee_rl" / "cli").glob("*.py") if "\ndef main(" in p.read_text())


def test_every_cli_has_a_console_command_and_a_script() -> None:
    targets = {value.split(":")[0] for value in ENTRY_POINTS.values()}
    assert targets == {f"ee_rl.cli.{m}" for m in MODULES}
    assert all(value.endswith(":main") for value in ENTRY_POINTS.values())
    assert sorted(p.stem for p in (ROOT / "scripts").glob("*.py")) == MODULES
    for name in MODULES:
        assert f"from ee_rl.cli.{name} import main" in (ROOT / "scripts" / f"{name}.py").read_text()


@pytest.mark.parametrize("name", MODULES)
def test_help_of_every_cli(name: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and result.stderr == ""
