"""publish_exits: heads copied only onto their own expert; README section and curve from the run's own numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from ee_rl.errors import UserError
from ee_rl.rl.agent_card import sections, upsert_section
from ee_rl.rl.publish_exits import publish_exits, read_scalars
from tests.rl.tiny_agent import shared_tiny_agent, write_tiny_agent

ROOT = Path(__file__).resolve().parents[2]
AGREEMENT = {"ic1": [0.2, 0.5, 0.6], "ic2": [0.3, 0.7, 0.9]}


def _fake_run(run_dir: Path, heads: Path, agent: Path, method: str = "sdn") -> Path:
    """A train_exits.py run layout: a heads file, summary.json and TensorBoard scalars."""
    run_dir.mkdir(parents=True)
    shutil.copy(heads, run_dir / f"exits-{method}.pt")
    summary = {
        "game": "pong", "method": method, "method_config": {"method": method, "cascade": False, "ensemble": None,
                                                             "detach_cascade": True},
        "expert": str(agent / "expert.zip"), "timesteps": 3072, "rounds": 3, "seed": 0, "wall_time_s": 36.0,
        "torch_threads": 1, "config": {"total_timesteps": 3072},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    writer = SummaryWriter(str(run_dir / "tb"))
    for i in range(3):
        for name, values in AGREEMENT.items():
            writer.add_scalar(f"agreement/{name}", values[i], 1024 * (i + 1))
            writer.add_scalar(f"kl/{name}", 1.0 - values[i], 1024 * (i + 1))
        writer.add_scalar("rollout/episode_return", -21.0 + i, 1024 * (i + 1))
    writer.close()
    return run_dir


@pytest.fixture()
def agent(tmp_path, tmp_path_factory) -> Path:
    """A copy of the tiny agent without its SDN heads (the run brings them: ``tmp_path/heads-sdn.pt``)."""
    agent = tmp_path / "Pong"
    shutil.copytree(shared_tiny_agent(tmp_path_factory), agent)
    (agent / "exits-sdn.pt").rename(tmp_path / "heads-sdn.pt")
    return agent


def test_publish_copies_heads_and_writes_the_section(tmp_path, agent) -> None:
    run = _fake_run(tmp_path / "run", tmp_path / "heads-sdn.pt", agent)
    (agent / "README.md").write_text(upsert_section("# Pong PPO expert\n", "other", "kept"))
    result = publish_exits(run, agent)
    assert (agent / "exits-sdn.pt").read_bytes() == (run / "exits-sdn.pt").read_bytes()
    assert (agent / "exits-sdn-training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (agent / "README.md").read_text()
    assert readme.startswith("# Pong PPO expert")
    assert list(sections(readme)) == ["other", "exits-sdn"]
    body = sections(readme)["exits-sdn"]
    # final = mean of the last (up to 10) rounds of the run's own scalars
    assert result["final_agreement"]["agreement/ic2"] == pytest.approx(sum(AGREEMENT["ic2"]) / 3)
    assert "| ic2 | 0.300 | 0.633 | 0.3667 |" in body
    assert "--method sdn --total-timesteps 3072" in body


def test_publish_into_another_folder_leaves_the_agent_untouched(tmp_path, agent) -> None:
    run = _fake_run(tmp_path / "run", tmp_path / "heads-sdn.pt", agent)
    before = {p.name: p.read_bytes() for p in agent.iterdir()}
    out = tmp_path / "ablations"
    result = publish_exits(run, agent, out)
    assert {p.name: p.read_bytes() for p in agent.iterdir()} == before
    assert (out / "exits-sdn.pt").read_bytes() == (run / "exits-sdn.pt").read_bytes()
    assert result["heads"] == str(out / "exits-sdn.pt")
    readme = (out / "README.md").read_text()
    assert readme.startswith(f"# Pong: exits trained on {agent / 'expert.zip'}")
    assert list(sections(readme)) == ["exits-sdn"]


def test_heads_of_another_expert_are_refused_and_nothing_is_written(tmp_path, agent) -> None:
    run = _fake_run(tmp_path / "run", tmp_path / "heads-sdn.pt", agent)
    other = write_tiny_agent(tmp_path / "Other", seed=1)
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(UserError, match="trained on another expert"):
        publish_exits(run, other)
    assert sorted(p.name for p in other.iterdir()) == before
    assert not (other / "README.md").exists()


def test_read_scalars_keeps_the_last_write_of_a_step(tmp_path) -> None:
    for values in ([1.0, 2.0], [5.0]):  # a resumed run writes a second event file from step 1 again
        writer = SummaryWriter(str(tmp_path / "tb"))
        for i, v in enumerate(values):
            writer.add_scalar("agreement/ic1", v, i + 1)
        writer.close()
    curve = read_scalars(tmp_path / "tb")["agreement/ic1"]
    assert curve.steps.tolist() == [1, 2]
    assert curve.values.tolist() == [5.0, 2.0]


def test_script_reports_a_missing_run_in_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "publish_exits.py"), "--run", str(tmp_path / "nope"),
         "--agent", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "summary.json not found" in err and "\n" not in err
