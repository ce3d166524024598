"""A game's pipeline as data (expert → publish → exits → publish → sweep → video → card): skips, resumes.

:func:`game_stages` lays out the stages of one game (``scripts/reproduce.py`` runs them here); their names, order and
settings are :mod:`ee_rl.rl.stages`', which ``scripts/grid.py`` runs for many games, methods and seeds at once. :func:`plan` decides, per stage, whether it runs, resumes,
is skipped or waits for an earlier stage; :func:`run_pipeline` checks that plan before doing any work, then runs each
stage's CLI as a subprocess and records ``<agent>/.pipeline/<stage>.json``: the SHA-256 of every input, the command
and the config settings it ran with, and the SHA-256 of what it wrote.

When a stage is skipped:

- its outputs exist and its manifest matches the current inputs, command and settings (up to date);
- its outputs exist and it has no manifest (agents published before this module existed): a missing manifest must
  never cost hours of training, so such outputs are trusted unless an input was remade by the pipeline after them;
- its outputs are gone (``runs/`` is not committed) but every stage that consumes them is skipped: the exits'
  training runs are not needed again to re-draw a video.

A stage runs when an input changed, when it has no outputs, or when a stage it depends on runs first. A training
stage whose checkpoint exists without its final output was interrupted: it continues only with ``resume=True``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ee_rl.core.fingerprint import file_sha256 as bytes_sha256
from ee_rl.errors import UserError
from ee_rl.rl.stages import (
    EXITS,
    EXPERT,
    MIN_SWEEP_EPISODES,  # noqa: F401 - re-exported: the sweep's fewest games, as the stages define them
    RETURN_TOLERANCE,
    SWEEP,
    config_section,
    exits_stage,
    sweep_episodes,
)

#: The repository root: the directory holding ``ee_rl/``, ``scripts/`` and ``configs/``.
REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = ".pipeline"

# Plan statuses: the first three do work.
RUN = "run"
RESUME = "resume"
PENDING = "pending"
INTERRUPTED = "interrupted"
SKIP_UP_TO_DATE = "skip (up to date)"
SKIP_UNRECORDED = "skip (outputs present, no manifest)"
SKIP_NOT_NEEDED = "skip (outputs gone, later stages up to date)"
NOT_SELECTED = "not selected"
WORKING = (RUN, RESUME, PENDING)

#: Fraction of the expert's return the video's threshold may lose (the card's comparison uses the same 5 %).
VIDEO_TOLERANCE = RETURN_TOLERANCE


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a pipeline: a CLI to run and the files it reads and writes (paths relative to the root).

    Attributes:
        name: short unique name (``expert``, ``exits-ztw``, ...), used by ``--stages`` and for the manifest.
        argv: the command after the Python interpreter (``scripts/x.py --flag v`` or ``-c code``); ``None`` for a
            stage whose command depends on an earlier stage's results: ``resolve`` builds it once they exist.
        inputs: files the stage reads; a change to any of them reruns it.
        outputs: files it writes; all of them present = done.
        card, sections: README sections of ``card`` the stage writes (a section, not a file, is its output).
        params: config settings that decide the outputs (read from a shared YAML: only this game's values count,
            so editing another game's section does not retrain this one).
        checkpoint: written during a long run; present without the outputs = interrupted, continued with
            ``resume_flag``.
        collect: ``(source, destination)`` files copied after the command succeeds (for CLIs that can only write
            into a scratch folder).
        resolve: ``resolve(root) -> Stage`` for ``argv is None``, called when the inputs exist.
        pending: what a stage with ``argv is None`` waits for, shown in a plan.
        run_options: options appended when the stage runs that change how fast it runs, not what it writes (the
            sweep's ``--workers``): shown in its command but not recorded in its manifest.
    """

    name: str
    argv: tuple[str, ...] | None
    inputs: tuple[Path, ...] = ()
    outputs: tuple[Path, ...] = ()
    card: Path | None = None
    sections: tuple[str, ...] = ()
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint: Path | None = None
    resume_flag: str = "--resume"
    collect: tuple[tuple[Path, Path], ...] = ()
    resolve: Callable[[Path], Stage] | None = None
    pending: str = ""
    run_options: tuple[str, ...] = ()

    def command(self, resume: bool = False) -> str:
        """The command as a user would type it from the root (``python scripts/...``)."""
        if self.argv is None:
            return "(command decided when the stages before it have run)"
        return shlex.join(["python", *self.argv, *self.run_options, *([self.resume_flag] if resume else [])])


@dataclasses.dataclass(frozen=True)
class PlanEntry:
    """What :func:`plan` decided for one stage, and why."""

    stage: Stage
    status: str
    reason: str = ""

    def line(self) -> str:
        """One line of a printed plan: name, status, reason, command."""
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.stage.name:<18} {self.status}{reason}\n{'':<18} {self.stage.command(self.status == RESUME)}"


class StageFailed(UserError):
    """A stage's command exited with a non-zero code (its own output says why)."""

    def __init__(self, stage: str, returncode: int) -> None:
        super().__init__(f"stage {stage} failed with exit code {returncode} (its output is above)")
        self.stage, self.returncode = stage, returncode


# ---------------------------------------------------------------------------------------------------------------
# The stages of one game


def game_stages(
    game: str,
    agent_dir: str | Path | None = None,
    *,
    seed: int = 0,
    methods: Sequence[str] = ("ztw", "sdn"),
    runs_dir: str | Path = "runs",
    root: str | Path = REPO_ROOT,
    sweep_workers: int = 1,
    sweep_executor: Sequence[str] = (),
) -> list[Stage]:
    """The stages that reproduce one game's agent folder, in order; paths relative to ``root``.

    ``agent_dir`` defaults to ``agents/<Game>``; the exits' training runs and scratch files go under ``runs_dir``
    (not committed). The sweep plays ``sweep_workers`` settings at once, on the executor ``sweep_executor`` names
    (``--executor ray --ray-address auto`` options of ``sweep.py``; same returns; run options, so changing them
    does not make a finished sweep stale). A bad game name is a :class:`UserError`. Only the game's own sections of
    ``configs/ppo_atari.yaml`` and ``configs/sweep.yaml`` become stage settings.
    """
    from ee_rl.rl.games import display_name, rom_id

    name = display_name(rom_id(game))
    root = Path(root)
    agent = agent_folder(game, agent_dir)
    runs = Path(runs_dir)
    training = agent / "training"
    checkpoint = training / "checkpoints" / "latest.zip"
    expert, expert_eval, card = agent / "expert.zip", agent / "expert_eval.json", agent / "README.md"
    expert_config = config_section(EXPERT, name, root / "configs")
    sweep_config = config_section(SWEEP, name, root / "configs")
    scratch = runs / "pipeline" / name / "evaluate-50"
    episodes = sweep_episodes(sweep_config.get("episodes", 0))

    stages = [
        Stage(
            EXPERT,
            ("scripts/train_policy.py", "--env", name, "--seed", str(seed), "--out", str(training),
             "--no-progress-bar"),
            outputs=(checkpoint, training / "eval.json"),  # eval.json is written once training has finished
            params={"ppo_atari": expert_config},
            checkpoint=checkpoint,
        ),
        Stage(
            "publish-expert",
            ("scripts/publish_expert.py", "--env", name, "--checkpoint", str(checkpoint), "--run-dir", str(training),
             "--out", str(agent), "--episodes", "10", "--seed", "0"),
            inputs=(checkpoint,),
            outputs=(expert, expert_eval),
        ),
        # publish_expert.py writes a whole agent folder; the 50-game evaluation of the published weights is its
        # expert_eval.json from a scratch folder, as agents/Pong and agents/Qbert got theirs.
        Stage(
            "evaluate-50",
            ("scripts/publish_expert.py", "--env", name, "--checkpoint", str(expert), "--no-curve",
             "--out", str(scratch), "--episodes", "50", "--seed", "0"),
            inputs=(expert,),
            outputs=(agent / "expert_eval_50games.json",),
            collect=((scratch / "expert_eval.json", agent / "expert_eval_50games.json"),),
        ),
    ]
    for method in methods:
        run_dir = runs / EXITS / f"{name}_{method}_s{seed}"
        heads = agent / f"exits-{method}.pt"
        stages.append(Stage(
            exits_stage(method),
            ("scripts/train_exits.py", "--env", name, "--expert", str(expert), "--method", method,
             "--seed", str(seed), "--out", str(run_dir), "--no-progress-bar"),
            inputs=(expert,),
            outputs=(run_dir / "summary.json", run_dir / f"exits-{method}.pt"),
            checkpoint=run_dir / "checkpoints" / "latest.pt",
        ))
        stages.append(Stage(
            f"publish-{exits_stage(method)}",
            ("scripts/publish_exits.py", "--run", str(run_dir), "--agent", str(agent)),
            inputs=(run_dir / "summary.json", run_dir / f"exits-{method}.pt", expert),
            outputs=(heads,),
            card=card,
            sections=(f"exits-{method}",),
        ))
    heads_files = tuple(agent / f"exits-{method}.pt" for method in methods)
    sweep_csv, sweep_json = agent / "sweep.csv", agent / "sweep.json"
    stages.append(Stage(
        SWEEP,
        ("scripts/sweep.py", "--env", name, "--agent", str(agent), "--out", str(agent), "--episodes", str(episodes),
         "--budget", "0.5", "--no-progress-bar"),
        # The pipeline reruns a sweep only when its inputs changed: replacing the old one is the point.
        run_options=("--overwrite", *(("--workers", str(sweep_workers)) if sweep_workers > 1 else ()),
                     *sweep_executor),
        inputs=(expert, *heads_files),
        outputs=(sweep_csv, sweep_json, agent / "sweep.png"),
        params={"sweep": sweep_config},
    ))
    video_inputs = (sweep_csv, expert, agent / "exits-ztw.pt")

    def resolve_video(root: Path) -> Stage:
        threshold = video_threshold(Path(root) / sweep_csv)
        out = agent / f"ztw-{threshold}.mp4"
        return dataclasses.replace(
            video,
            argv=("scripts/record_video.py", "--env", name, "--agent", str(agent), "--method", "ztw",
                  "--threshold", threshold, "--out", str(out), "--max-seconds", "60"),
            outputs=(out,),
            resolve=None,
        )

    video = Stage("video", None, inputs=video_inputs, resolve=resolve_video,
                  pending=f"threshold from {sweep_csv}: the cheapest ZTW setting within 5 % of the expert")
    if "ztw" in methods:
        stages.append(video)
    stages.append(Stage(
        "card",
        ("scripts/compare_methods.py", "--sweep", str(sweep_json), "--card", str(agent)),
        inputs=(sweep_json,),
        card=card,
        sections=("comparison",),
    ))
    return stages


def agent_folder(game: str, agent_dir: str | Path | None = None) -> Path:
    """The agent folder of ``game``: ``agent_dir`` if given, else ``agents/<Game>``; unknown game = UserError."""
    from ee_rl.rl.games import display_name, rom_id

    return Path(agent_dir) if agent_dir is not None else Path("agents") / display_name(rom_id(game))


def video_threshold(sweep_csv: str | Path) -> str:
    """``--threshold`` of the video: ZTW's cheapest setting within :data:`VIDEO_TOLERANCE` of the expert's return."""
    from ee_rl.rl.compare import cheapest_within_fraction
    from ee_rl.rl.sweep import read_csv

    row = cheapest_within_fraction(read_csv(sweep_csv), VIDEO_TOLERANCE).get("ztw")
    return "full" if row is None or row.is_full else f"{row.threshold:g}"


def stage_names(stages: Iterable[Stage]) -> list[str]:
    """The names of ``stages``, in order."""
    return [s.name for s in stages]


def parse_stage_list(text: str, stages: Sequence[Stage]) -> set[str]:
    """``--stages a,b`` as a set of names; an unknown name is a :class:`UserError` listing the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    valid = stage_names(stages)
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        what = f"unknown stage(s) {', '.join(unknown)}" if unknown else "no stage named"
        raise UserError(f"--stages: {what}; valid stages: {', '.join(valid)}")
    return set(names)


# ---------------------------------------------------------------------------------------------------------------
# Manifests


def manifest_path(manifest_dir: Path, stage: Stage) -> Path:
    """Where the manifest of ``stage`` lives."""
    return manifest_dir / f"{stage.name}.json"


def file_sha256(path: Path) -> str:
    """What a stage's input *is*: the SHA-256 of a file's bytes, except for an SB3 model zip, which is identified by
    its policy weights (``weights:<sha256>``, :func:`ee_rl.rl.checkpoint.weights_sha256`): re-saving an expert with
    the same weights (say as a plain SB3 zip) changes its bytes, not what the stages after it computed from it."""
    from ee_rl.rl import checkpoint

    if path.suffix == ".zip" and _is_sb3_zip(path):
        return "weights:" + checkpoint.weights_sha256(checkpoint.load_model(path, device="cpu"))
    return bytes_sha256(path)


def _is_sb3_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return {"data", "policy.pth"} <= set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A stage's manifest, or ``None`` when there is none; an unreadable one counts as none (the stage reruns)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _sections_present(root: Path, stage: Stage) -> bool:
    if not stage.sections:
        return True
    from ee_rl.rl.agent_card import sections

    card = root / stage.card if stage.card is not None else None
    if card is None or not card.is_file():
        return False
    return set(stage.sections) <= set(sections(card.read_text()))


# ---------------------------------------------------------------------------------------------------------------
# Planning


def plan(
    stages: Sequence[Stage],
    *,
    root: str | Path = REPO_ROOT,
    manifest_dir: str | Path,
    only: Iterable[str] | None = None,
    resume: bool = False,
) -> list[PlanEntry]:
    """Decide what each stage does now (see the module docstring); reads files, writes nothing.

    ``only`` restricts the run to the named stages (the others are "not selected"; a named stage with missing
    outputs runs even if later stages are up to date). ``manifest_dir`` is relative to ``root`` unless absolute.
    """
    root = Path(root)
    manifests = root / Path(manifest_dir)
    names = stage_names(stages)
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    only = None if only is None else set(only)
    selected = [only is None or s.name in only for s in stages]
    explicit = [only is not None and s.name in only for s in stages]
    hashes: dict[Path, str] = {}

    def sha(path: Path) -> str:
        if path not in hashes:
            hashes[path] = file_sha256(root / path)
        return hashes[path]

    deferred = [s.argv is None for s in stages]
    stages = list(stages)
    producer: dict[Path, int] = {}
    for i, stage in enumerate(stages):
        for path in stage.outputs:
            producer.setdefault(path, i)
    state: list[str] = []  # done | unrecorded | stale | missing | pending
    reasons: list[str] = []
    valid: list[dict[str, Any] | None] = []  # manifests that match their stage's current inputs

    def virtual_sha(path: Path) -> str | None:
        # A file that is gone counts with the hash recorded by its stage, if that stage is still up to date: the
        # exits' training runs are not committed, their published heads are.
        if (root / path).is_file():
            return sha(path)
        p = producer.get(path)
        recorded = valid[p] if p is not None and p < len(valid) else None
        return None if recorded is None else recorded.get("outputs", {}).get(str(path))

    for i, stage in enumerate(stages):
        if stage.argv is None:
            if all((root / p).is_file() for p in stage.inputs) and stage.resolve is not None:
                stage = stages[i] = stage.resolve(root)
            else:
                state.append("pending"), reasons.append(stage.pending), valid.append(None)
                continue
        manifest = read_manifest(manifest_path(manifests, stage))
        present = [p for p in stage.outputs if (root / p).is_file()]
        complete = len(present) == len(stage.outputs) and _sections_present(root, stage)
        mismatch = _manifest_mismatch(manifest, stage, virtual_sha) if manifest is not None else "no manifest"
        valid.append(manifest if mismatch is None else None)
        if complete and mismatch is None:
            state.append("done"), reasons.append("")
        elif complete and manifest is None:
            newer = _remade_after(stage, present, producer, stages, manifests, root)
            if newer:
                state.append("stale"), reasons.append(f"{newer} was remade after these outputs")
            else:
                state.append("unrecorded"), reasons.append("")
        elif complete:
            state.append("stale"), reasons.append(mismatch)
        else:
            missing = [str(p) for p in stage.outputs if p not in present] or [f"section {s}" for s in stage.sections]
            state.append("missing"), reasons.append(f"no {missing[0]}" + (" yet" if not present else ""))

    consumers = [
        [j for j in range(i + 1, len(stages)) if set(stages[j].inputs) & set(stages[i].outputs)]
        for i in range(len(stages))
    ]
    producers = [sorted({producer[p] for p in stage.inputs if p in producer}) for stage in stages]
    runs = [False] * len(stages)
    why = list(reasons)
    changed = True
    while changed:  # statuses only ever turn to "run": this ends after at most len(stages) rounds
        changed = False
        for i, stage in enumerate(stages):
            if runs[i] or not selected[i]:
                continue
            upstream = [stages[p].name for p in producers[i] if runs[p]]
            missing_needed = state[i] == "missing" and (
                explicit[i]
                or not consumers[i]
                or (stage.checkpoint is not None and (root / stage.checkpoint).is_file())
                or any(runs[j] for j in consumers[i])
            )
            if state[i] in ("stale", "pending") or missing_needed or upstream:
                runs[i], changed = True, True
                if upstream and state[i] not in ("stale", "missing", "pending"):
                    why[i] = f"after {', '.join(upstream)}"

    entries = []
    for i, stage in enumerate(stages):
        if not selected[i]:
            entries.append(PlanEntry(stage, NOT_SELECTED))
        elif not runs[i]:
            status = {"done": SKIP_UP_TO_DATE, "unrecorded": SKIP_UNRECORDED}.get(state[i], SKIP_NOT_NEEDED)
            entries.append(PlanEntry(stage, status))
        elif stage.argv is None or (deferred[i] and any(runs[p] for p in producers[i])):
            # The command depends on files an earlier stage is about to rewrite: resolved when it has.
            pending = dataclasses.replace(stage, argv=None, outputs=()) if stage.argv is not None else stage
            entries.append(PlanEntry(pending, PENDING, pending.pending))
        elif stage.checkpoint is not None and (root / stage.checkpoint).is_file():
            interrupted = f"{stage.checkpoint} exists" + (f", {why[i]}" if why[i] else "")
            entries.append(PlanEntry(stage, RESUME if resume else INTERRUPTED, interrupted))
        else:
            entries.append(PlanEntry(stage, RUN, why[i]))
    return entries


def _manifest_mismatch(manifest: Mapping[str, Any], stage: Stage, sha: Callable[[Path], str | None]) -> str | None:
    """Why ``manifest`` does not describe a run of ``stage`` on the current inputs; ``None`` when it does."""
    if manifest.get("argv") != list(stage.argv or ()):
        return "command changed"
    if manifest.get("params", {}) != json.loads(json.dumps(dict(stage.params))):
        return "settings changed"
    recorded = manifest.get("inputs", {})
    for path in stage.inputs:
        current = sha(path)
        if current is None:
            return f"no {path}"
        if recorded.get(str(path)) != current:
            return f"{path} changed"
    return None


def _remade_after(
    stage: Stage, present: Sequence[Path], producer: Mapping[Path, int], stages: Sequence[Stage], manifests: Path,
    root: Path,
) -> str | None:
    """An input of ``stage`` that the pipeline remade after ``stage``'s unrecorded outputs were written, if any.

    Outputs without a manifest are trusted (they predate the pipeline), except when the pipeline has since
    published a new version of what they were made from: new exits on an old expert are not up to date.
    """
    written = [*present, *([stage.card] if stage.sections and stage.card is not None else [])]
    oldest = min((root / p).stat().st_mtime for p in written) if written else float("inf")
    for path in stage.inputs:
        p = producer.get(path)
        if p is None:
            continue
        manifest = read_manifest(manifest_path(manifests, stages[p]))
        if manifest is not None and float(manifest.get("finished_unix", 0)) > oldest:
            return str(path)
    return None


def check_plan(entries: Sequence[PlanEntry], *, root: str | Path = REPO_ROOT) -> None:
    """Refuse a plan that cannot run to the end, before any stage runs: an interrupted stage without ``resume``,
    or a stage whose input is missing and made by no stage that runs before it."""
    root = Path(root)
    made: set[Path] = set()
    for entry in entries:
        stage = entry.stage
        if entry.status == INTERRUPTED:
            folder = stage.checkpoint.parent.parent if stage.checkpoint is not None else stage.checkpoint
            raise UserError(
                f"stage {stage.name} has the checkpoint of an earlier run ({entry.reason}): add --resume to "
                f"continue it, or move {folder} away to start afresh"
            )
        if entry.status not in WORKING:
            continue
        for path in stage.inputs:
            if path not in made and not (root / path).is_file():
                maker = next((e for e in entries if path in e.stage.outputs), None)
                hint = (
                    f": stage {maker.stage.name} makes it, add that stage to --stages"
                    if maker is not None and maker.status == NOT_SELECTED
                    else ""
                )
                raise UserError(f"stage {stage.name} needs {path}, which does not exist{hint}")
        made.update(stage.outputs)


# ---------------------------------------------------------------------------------------------------------------
# Running


def run_command(cmd: Sequence[str], cwd: Path) -> int:
    """Run ``cmd`` in ``cwd``, its output streaming to ours; the exit code.

    The child imports the same ``ee_rl`` as this process (a worktree's, not whichever one is installed).
    """
    env = dict(os.environ)
    library = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([library, *filter(None, [env.get("PYTHONPATH")])])
    sys.stdout.flush()
    return subprocess.run(list(cmd), cwd=cwd, env=env).returncode


def run_stage(
    stage: Stage,
    *,
    root: Path,
    manifest_dir: Path,
    resume: bool = False,
    runner: Callable[[Sequence[str], Path], int] = run_command,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run one resolved stage, copy its collected files, check its outputs and write its manifest (returned)."""
    from ee_rl.io import atomic_write_bytes, atomic_write_json

    assert stage.argv is not None, "resolve a stage before running it"
    inputs = {str(p): file_sha256(root / p) for p in stage.inputs}  # what this run reads, before it starts
    echo(f"==> {stage.name}: {stage.command(resume)}")
    started = time.time()
    argv = [*stage.argv, *stage.run_options, *([stage.resume_flag] if resume else [])]
    returncode = runner([sys.executable, *argv], root)
    if returncode != 0:
        raise StageFailed(stage.name, returncode)
    for source, destination in stage.collect:
        atomic_write_bytes(root / destination, (root / source).read_bytes())
    missing = [str(p) for p in stage.outputs if not (root / p).is_file()]
    if missing or not _sections_present(root, stage):
        what = ", ".join(missing) if missing else f"section(s) {', '.join(stage.sections)} of {stage.card}"
        raise UserError(f"stage {stage.name} exited 0 but did not write {what}")
    manifest = {
        "stage": stage.name,
        "argv": list(stage.argv),  # run options and --resume do not change what the stage makes
        "params": json.loads(json.dumps(dict(stage.params))),
        "inputs": inputs,
        "outputs": {str(p): file_sha256(root / p) for p in stage.outputs},
        "wall_time_s": round(time.time() - started, 1),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "finished_unix": time.time(),
    }
    return atomic_write_json(manifest_path(root / manifest_dir, stage), manifest)


def run_pipeline(
    stages: Sequence[Stage],
    *,
    root: str | Path = REPO_ROOT,
    manifest_dir: str | Path,
    only: Iterable[str] | None = None,
    resume: bool = False,
    runner: Callable[[Sequence[str], Path], int] = run_command,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Run the stages that :func:`plan` says must run, in order; the names of those that ran.

    The whole plan is checked first (:func:`check_plan`), so a pipeline that cannot finish does nothing. The plan
    is made again after each stage: a stage whose command depends on an earlier one's results resolves then.
    """
    root, manifest_dir = Path(root), Path(manifest_dir)
    only = None if only is None else set(only)
    check_plan(plan(stages, root=root, manifest_dir=manifest_dir, only=only, resume=resume), root=root)
    ran: list[str] = []
    while True:
        entries = plan(stages, root=root, manifest_dir=manifest_dir, only=only, resume=resume)
        check_plan(entries, root=root)
        entry = next((e for e in entries if e.status in WORKING and e.stage.name not in ran), None)
        if entry is None:
            return ran
        if entry.status == PENDING:
            raise UserError(f"stage {entry.stage.name} cannot start: {entry.stage.pending}")
        run_stage(entry.stage, root=root, manifest_dir=manifest_dir, resume=entry.status == RESUME, runner=runner,
                  echo=echo)
        ran.append(entry.stage.name)
