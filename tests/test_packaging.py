"""The built wheel ships what the CLIs read at run time (configs, the card template), and an installed copy finds
them without the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (path,) = out.glob("ee_rl-*.whl")
    return path


def test_the_wheel_holds_every_config_and_the_card_template(wheel) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.name for p in (ROOT / "ee_rl" / "configs").glob("*.yaml"))
    assert configs and {f"ee_rl/configs/{c}" for c in configs} <= names
    assert "ee_rl/rl/templates/expert_card.md" in names


def test_an_installed_copy_reads_its_configs_outside_the_source_tree(wheel, tmp_path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    code = ("import ee_rl.config as c, ee_rl.rl.sweep as s; "
            "print(c.CONFIG_DIR); print(s.load_sweep_settings(None, 'qbert').episodes)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert Path(out[0]).is_relative_to(target)  # not the repository's copy
    assert out[1] == "30"  # configs/sweep.yaml's Qbert section
    helped = subprocess.run([str(target / "bin" / "ee-rl-sweep"), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: ee-rl-sweep")
