"""Tests of ee_rl.rl.pipeline and scripts/reproduce.py: plans, skips, resumes and bad input.

The skip logic runs on fake stages (``python -c`` commands that write their outputs from their inputs) in a temp
folder; the real stages of a game are only planned, never run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ee_rl.errors import UserError
from ee_rl.rl import pipeline
from ee_rl.rl.pipeline import Stage

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "reproduce.py"
MANIFESTS = Path("agent/.pipeline")

# Writes every output as: the stage's name, its extra arguments, then each input's text. An output thus changes
# exactly when an input does, as a real stage's would.
WRITE = """
import pathlib, sys
name, n_in, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
inputs, extra = rest[:n_in], [a for a in rest if a.startswith('--')]
outputs = [a for a in rest[n_in:] if not a.startswith('--')]
text = name + ' ' + ' '.join(extra) + '|' + '|'.join(pathlib.Path(p).read_text() for p in inputs)
for out in outputs:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(text)
"""


def fake(name: str, inputs: list[str], outputs: list[str], **kwargs) -> Stage:
    """A stage that writes ``outputs`` from ``inputs`` (paths relative to the test's root)."""
    argv = ("-c", WRITE, name, str(len(inputs)), *inputs, *outputs)
    return Stage(name, argv, inputs=tuple(map(Path, inputs)), outputs=tuple(map(Path, outputs)), **kwargs)


def chain() -> list[Stage]:
    """a ← src; b ← a; c ← b, other; d ← other. ``runs/`` holds a's output, as the exits' runs are held."""
    return [
        fake("a", ["src.txt"], ["runs/a.txt"]),
        fake("b", ["runs/a.txt"], ["agent/b.txt"]),
        fake("c", ["agent/b.txt", "other.txt"], ["agent/c.txt"]),
        fake("d", ["other.txt"], ["agent/d.txt"]),
    ]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "src.txt").write_text("source 1")
    (tmp_path / "other.txt").write_text("other 1")
    return tmp_path


def run(root: Path, stages: list[Stage] | None = None, **kwargs) -> list[str]:
    return pipeline.run_pipeline(stages or chain(), root=root, manifest_dir=MANIFESTS, echo=lambda _: None, **kwargs)


def statuses(root: Path, stages: list[Stage] | None = None, **kwargs) -> dict[str, str]:
    entries = pipeline.plan(stages or chain(), root=root, manifest_dir=MANIFESTS, **kwargs)
    return {e.stage.name: e.status for e in entries}


def test_first_run_runs_every_stage_and_the_second_none(root):
    assert set(statuses(root).values()) == {pipeline.RUN}
    assert run(root) == ["a", "b", "c", "d"]
    assert (root / "agent" / "c.txt").read_text() == "c |b |a |source 1|other 1"
    manifest = json.loads((root / MANIFESTS / "c.json").read_text())
    assert set(manifest["inputs"]) == {"agent/b.txt", "other.txt"}
    assert list(manifest["outputs"]) == ["agent/c.txt"]
    assert run(root) == []
    assert set(statuses(root).values()) == {pipeline.SKIP_UP_TO_DATE}


@pytest.mark.parametrize(
    "changed, expected",
    [("src.txt", ["a", "b", "c"]), ("other.txt", ["c", "d"])],
)
def test_a_changed_input_reruns_exactly_the_stages_that_depend_on_it(root, changed, expected):
    run(root)
    (root / changed).write_text("edited")
    assert [name for name, status in statuses(root).items() if status != pipeline.SKIP_UP_TO_DATE] == expected
    assert run(root) == expected
    assert "edited" in (root / "agent" / "c.txt").read_text()
    assert run(root) == []


def test_an_intermediate_output_that_is_gone_is_not_remade_while_later_stages_are_up_to_date(root):
    run(root)
    shutil.rmtree(root / "runs")  # not committed: a fresh clone has the agent folder and its manifests only
    assert statuses(root)["a"] == pipeline.SKIP_NOT_NEEDED
    assert run(root) == []
    (root / "src.txt").write_text("source 2")  # now b needs a new a
    assert run(root) == ["a", "b", "c"]


def test_outputs_without_a_manifest_are_trusted_and_not_remade(root):
    # Agents published before the pipeline: their files are there, no manifests, no training runs.
    for name in ("b", "c", "d"):
        (root / "agent").mkdir(exist_ok=True)
        (root / "agent" / f"{name}.txt").write_text("published by hand")
    assert statuses(root) == {
        "a": pipeline.SKIP_NOT_NEEDED, "b": pipeline.SKIP_UNRECORDED, "c": pipeline.SKIP_UNRECORDED,
        "d": pipeline.SKIP_UNRECORDED,
    }
    assert run(root) == []


def test_unrecorded_outputs_are_remade_once_the_pipeline_remade_an_input(root):
    (root / "runs").mkdir()
    (root / "agent").mkdir()
    for path in ("runs/a.txt", "agent/b.txt", "agent/c.txt", "agent/d.txt"):
        (root / path).write_text("published by hand")
        os.utime(root / path, (1_000_000_000, 1_000_000_000))  # written long before the pipeline runs
    (root / "runs" / "a.txt").unlink()
    assert run(root, only=["a"]) == ["a"]  # a named stage with missing outputs runs
    assert statuses(root)["b"] == pipeline.RUN
    assert run(root) == ["b", "c"]


def test_a_named_stage_needs_its_inputs_made_by_a_selected_stage(root):
    needs = r"stage b needs runs/a.txt, which does not exist: stage a makes it, add that stage to --stages"
    with pytest.raises(UserError, match=needs):
        run(root, only=["b"])
    assert not (root / "agent").exists()
    assert run(root, only=["a", "b"]) == ["a", "b"]
    assert statuses(root, only=["c"]) == {
        "a": pipeline.NOT_SELECTED, "b": pipeline.NOT_SELECTED, "c": pipeline.RUN, "d": pipeline.NOT_SELECTED,
    }


def test_unknown_stage_names_are_one_error_listing_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown stage\(s\) bogus; valid stages: a, b, c, d"):
        pipeline.parse_stage_list("a,bogus", chain())
    assert pipeline.parse_stage_list(" a, c ", chain()) == {"a", "c"}


def interrupted_chain() -> list[Stage]:
    stages = chain()
    stages[1] = fake("b", ["runs/a.txt"], ["agent/b.txt"], checkpoint=Path("runs/b/latest.pt"))
    return stages


def test_an_interrupted_stage_needs_resume_and_nothing_runs_without_it(root):
    run(root, interrupted_chain(), only=["a"])
    (root / "src.txt").write_text("source 2")  # a would run first...
    (root / "runs" / "b").mkdir()
    (root / "runs" / "b" / "latest.pt").write_text("half-trained")
    assert statuses(root, interrupted_chain())["b"] == pipeline.INTERRUPTED
    earlier_run = r"stage b has the checkpoint of an earlier run \(runs/b/latest.pt exists.*add --resume"
    with pytest.raises(UserError, match=earlier_run):
        run(root, interrupted_chain())
    assert "source 1" in (root / "runs" / "a.txt").read_text()  # ...but the plan is refused before any work
    assert statuses(root, interrupted_chain(), resume=True)["b"] == pipeline.RESUME
    assert run(root, interrupted_chain(), resume=True) == ["a", "b", "c", "d"]
    assert (root / "agent" / "b.txt").read_text().startswith("b --resume|")
    # --resume continues the same command: the manifest records it without the flag, so nothing reruns.
    assert "--resume" not in json.loads((root / MANIFESTS / "b.json").read_text())["argv"]
    (root / "runs" / "b" / "latest.pt").unlink()
    assert run(root, interrupted_chain()) == []


def test_a_failing_stage_stops_the_pipeline_with_its_name_and_exit_code(root):
    stages = chain()
    stages[1] = Stage("b", ("-c", "import sys; sys.exit(3)"), inputs=(Path("runs/a.txt"),),
                      outputs=(Path("agent/b.txt"),))
    with pytest.raises(pipeline.StageFailed, match="stage b failed with exit code 3") as failure:
        run(root, stages)
    assert failure.value.returncode == 3
    assert sorted(p.name for p in (root / MANIFESTS).iterdir()) == ["a.json"]
    assert not (root / "agent" / "c.txt").exists()


def test_a_stage_that_does_not_write_its_outputs_is_an_error(root):
    stages = [Stage("a", ("-c", "pass"), inputs=(Path("src.txt"),), outputs=(Path("agent/a.txt"),))]
    with pytest.raises(UserError, match="stage a exited 0 but did not write agent/a.txt"):
        run(root, stages)
    assert not (root / MANIFESTS / "a.json").exists()


def test_a_command_decided_by_an_earlier_stage_waits_for_it(root):
    def resolve(root: Path) -> Stage:
        value = (root / "agent" / "b.txt").read_text().split("|")[-1].split()[-1]
        return fake("v", ["agent/b.txt"], [f"agent/v-{value}.txt"])

    stages = [*chain()[:2], Stage("v", None, inputs=(Path("agent/b.txt"),), resolve=resolve, pending="value from b")]
    assert statuses(root, stages)["v"] == pipeline.PENDING
    assert run(root, stages) == ["a", "b", "v"]
    assert (root / "agent" / "v-1.txt").is_file()
    (root / "src.txt").write_text("source 2")
    assert statuses(root, stages)["v"] == pipeline.PENDING  # b is about to change what v's command is
    assert run(root, stages) == ["a", "b", "v"]
    assert (root / "agent" / "v-2.txt").is_file()


def test_a_card_section_is_an_output(root):
    (root / "agent").mkdir()
    (root / "agent" / "README.md").write_text("# card\n")
    code = "import pathlib; p = pathlib.Path('agent/README.md'); p.write_text(p.read_text() + " \
           "'<!-- section:comparison -->\\nx\\n<!-- /section:comparison -->\\n')"
    stages = [Stage("card", ("-c", code), inputs=(Path("src.txt"),), card=Path("agent/README.md"),
                    sections=("comparison",))]
    assert statuses(root, stages)["card"] == pipeline.RUN
    assert run(root, stages) == ["card"]
    assert statuses(root, stages)["card"] == pipeline.SKIP_UP_TO_DATE


def test_the_plan_of_a_new_game_lists_every_stage_in_order(tmp_path):
    agent = tmp_path / "Seaquest"
    stages = pipeline.game_stages("seaquest", agent)
    entries = pipeline.plan(stages, manifest_dir=agent / ".pipeline")
    assert [e.stage.name for e in entries] == [
        "expert", "publish-expert", "evaluate-50", "exits-ztw", "publish-exits-ztw", "exits-sdn", "publish-exits-sdn",
        "sweep", "video", "card",
    ]
    status = {e.stage.name: e.status for e in entries}
    assert status["video"] == pipeline.PENDING and set(status.values()) == {pipeline.RUN, pipeline.PENDING}
    commands = {e.stage.name: e.stage.command() for e in entries}
    assert commands["expert"].startswith(
        f"python scripts/train_policy.py --env Seaquest --seed 0 --out {agent}/training"
    )
    assert commands["publish-expert"].startswith(
        f"python scripts/publish_expert.py --env Seaquest --checkpoint {agent}/training/checkpoints/latest.zip "
        f"--run-dir {agent}/training --out {agent} --episodes 10 --seed 0"
    )
    assert "--method sdn" in commands["exits-sdn"] and "--out runs/exits/Seaquest_sdn_s0" in commands["exits-sdn"]
    assert commands["publish-exits-ztw"] == (
        f"python scripts/publish_exits.py --run runs/exits/Seaquest_ztw_s0 --agent {agent}"
    )
    assert "--episodes 20" in commands["sweep"] and "--budget 0.5" in commands["sweep"]
    assert commands["card"] == f"python scripts/compare_methods.py --sweep {agent}/sweep.json --card {agent}"
    pipeline.check_plan(entries)
    assert not agent.exists()


def test_run_options_reach_the_command_but_do_not_make_a_finished_stage_stale(root):
    run(root)
    faster = [dataclasses.replace(s, run_options=("--workers=2",)) for s in chain()]
    assert set(statuses(root, faster).values()) == {pipeline.SKIP_UP_TO_DATE}
    (root / "other.txt").write_text("edited")
    assert run(root, faster) == ["c", "d"]
    assert (root / "agent" / "d.txt").read_text().startswith("d --workers=2|")  # the option was passed
    assert "--workers=2" not in json.loads((root / MANIFESTS / "d.json").read_text())["argv"]
    sweep = {s.name: s for s in pipeline.game_stages("Qbert", sweep_workers=2)}["sweep"]
    assert sweep.command().endswith("--no-progress-bar --overwrite --workers 2")
    on_ray = ("--executor", "ray", "--ray-address", "auto")
    sweep = {s.name: s for s in pipeline.game_stages("Qbert", sweep_executor=on_ray)}["sweep"]
    assert sweep.command().endswith("--overwrite --executor ray --ray-address auto") and "ray" not in sweep.argv


def test_the_sweep_plays_the_games_the_config_gives_a_game_if_more_than_twenty():
    sweep = {s.name: s for s in pipeline.game_stages("Qbert")}["sweep"]
    assert sweep.argv[sweep.argv.index("--episodes") + 1] == "30"  # configs/sweep.yaml: Qbert plays 30


def test_the_video_uses_the_cheapest_ztw_threshold_within_five_percent(tmp_path):
    agent = tmp_path / "Pong"
    agent.mkdir()
    for name in ("sweep.csv", "expert.zip", "exits-ztw.pt"):
        shutil.copy(ROOT / "agents" / "Pong" / name, agent / name)
    # agents/Pong/sweep.csv: ZTW at 0.1 scores 17.4 (the expert 17.3) at 38 % of the FLOPs: its cheapest setting.
    video = {s.name: s for s in pipeline.game_stages("Pong", agent)}["video"]
    entry = {e.stage.name: e for e in pipeline.plan([video], manifest_dir=agent / ".pipeline")}["video"]
    assert entry.status == pipeline.RUN
    assert entry.stage.command() == (
        f"python scripts/record_video.py --env Pong --agent {agent} --method ztw --threshold 0.1 "
        f"--out {agent}/ztw-0.1.mp4 --max-seconds 60"
    )


def test_an_unknown_game_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown Atari game 'Nope'"):
        pipeline.game_stages("Nope", tmp_path)


def reproduce(*args: str) -> subprocess.CompletedProcess:
    # The worktree's ee_rl, whichever one the virtualenv has installed.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--env", "Nope", "--dry-run"], "unknown Atari game 'Nope'"),
        (["--env", "Seaquest", "--stages", "expert,bogus", "--dry-run"],
         "unknown stage(s) bogus; valid stages: expert,"),
    ],
)
def test_bad_input_is_one_line_without_a_traceback(args, fragment):
    proc = reproduce(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and fragment in proc.stderr
    assert proc.stdout == ""


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    agent = tmp_path / "agent"
    proc = reproduce("--env", "Seaquest", "--agent-dir", str(agent), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split()[:2] for line in proc.stdout.splitlines() if not line.startswith(" ")]
    assert lines[0] == ["expert", "run"] and lines[-2] == ["video", "pending"] and lines[-1] == ["card", "run"]
    assert f"python scripts/train_policy.py --env Seaquest --seed 0 --out {agent}/training" in proc.stdout
    assert not agent.exists() and not (ROOT / "runs" / "pipeline" / "Seaquest").exists()


def test_an_expert_re_saved_with_the_same_weights_is_the_same_input(tmp_path):
    from ee_rl.rl.checkpoint import load_model, save_model_atomic
    from ee_rl.rl.publish import expert_bytes
    from tests.rl.tiny_agent import write_tiny_agent

    root = tmp_path
    write_tiny_agent(root / "agent")
    writes = "import pathlib; pathlib.Path('agent/out.txt').write_text('made from the expert')"
    stages = [Stage("uses-expert", ("-c", writes), inputs=(Path("agent/expert.zip"),),
                    outputs=(Path("agent/out.txt"),))]
    assert run(root, stages) == ["uses-expert"]
    model = load_model(root / "agent" / "expert.zip", device="cpu")
    before = (root / "agent" / "expert.zip").read_bytes()
    (root / "agent" / "expert.zip").write_bytes(expert_bytes(model))  # plain SB3 zip: other bytes, same weights
    assert (root / "agent" / "expert.zip").read_bytes() != before
    assert statuses(root, stages) == {"uses-expert": pipeline.SKIP_UP_TO_DATE}
    model.policy.action_net.bias.data += 1.0  # other weights: the stage after it is stale
    save_model_atomic(model, root / "agent" / "expert.zip")
    assert statuses(root, stages) == {"uses-expert": pipeline.RUN}
