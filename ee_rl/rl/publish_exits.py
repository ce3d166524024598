"""Publish trained early exits into an agent folder: the heads file, its training curves, and a README section.

``publish_exits(run_dir, agent_dir)`` takes a finished (or stopped) ``train_exits.py`` run, checks that its heads
belong to the agent's ``expert.zip`` (same SHA-256), copies ``exits-<method>.pt`` into the folder,
draws ``exits-<method>-training.png`` from the run's TensorBoard scalars and writes the ``exits-<method>`` section
of the folder's README (final per-exit agreement with the expert, KL, steps, wall time, the command). Every number
comes from the run's own files; nothing is written unless all of it could be read.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from ee_rl.rl.agent_card import upsert_section
from ee_rl.rl.policy import read_agent_heads

#: Rounds averaged for the "final" numbers: one round (1024 states) is noisy.
FINAL_ROUNDS = 10


@dataclass(frozen=True)
class ScalarCurve:
    """One TensorBoard scalar: env steps and values, in step order."""

    steps: np.ndarray
    values: np.ndarray

    def final_mean(self, rounds: int = FINAL_ROUNDS) -> float:
        """Mean of the last ``rounds`` values."""
        return float(np.mean(self.values[-rounds:]))


def read_scalars(tb_dir: str | Path) -> dict[str, ScalarCurve]:
    """Every scalar logged under ``tb_dir`` (all event files; for a repeated step the last write wins, as after a
    resume). Raises :class:`UserError` if there is no event file or no scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = Path(tb_dir)
    def written_at(path: Path) -> tuple[int, str]:  # events.out.tfevents.<unix time>.<host>.<pid>.<counter>
        stamp = path.name.split(".")[3]
        return (int(stamp) if stamp.isdigit() else 0), path.name

    files = sorted(tb_dir.glob("events.out.tfevents.*"), key=written_at) if tb_dir.is_dir() else []
    if not files:
        raise UserError(f"no TensorBoard event file in {tb_dir} (train_exits.py writes them under <run>/tb/)")
    points: dict[str, dict[int, float]] = {}
    for path in files:  # replayed in the order written: later files overwrite earlier steps
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    if not points:
        raise UserError(f"the TensorBoard files in {tb_dir} hold no scalar")
    curves = {}
    for tag, by_step in points.items():
        steps = np.array(sorted(by_step), dtype=np.int64)
        curves[tag] = ScalarCurve(steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return curves


def _exit_tags(curves: Mapping[str, ScalarCurve], metric: str) -> list[str]:
    """``metric/ic1, metric/ic2, ..., metric/ensemble1, ...`` present in ``curves``, ICs first, in exit order."""
    pattern = re.compile(rf"{re.escape(metric)}/(ic|ensemble)(\d+)")
    found = [(m.group(1) != "ic", int(m.group(2)), tag) for tag in curves if (m := pattern.fullmatch(tag))]
    return [tag for *_, tag in sorted(found)]


def exits_training_png(curves: Mapping[str, ScalarCurve], title: str) -> bytes:
    """PNG: agreement with the expert of each IC / ensemble vs env steps, and the early-exit policy's episode return."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax, ax_ret = fig.subplots(1, 2)
    for tag in _exit_tags(curves, "agreement"):
        c = curves[tag]
        ax.plot(c.steps, c.values, lw=1.2, label=tag.split("/", 1)[1], ls="-" if "/ic" in tag else "--")
    ax.set_xlabel("env steps")
    ax.set_ylabel("agreement with the expert's action")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ret = curves.get("rollout/episode_return")
    if ret is not None:
        ax_ret.plot(ret.steps, ret.values, lw=1.0, color="tab:green")
    ax_ret.set_xlabel("env steps")
    ax_ret.set_ylabel("episode return (random exit per step)")
    ax_ret.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def train_exits_command(summary: Mapping[str, Any], display: str, out: str) -> str:
    """The ``train_exits.py`` command that makes this run (method, steps, seed, output), from its summary."""
    method = summary["method_config"]
    parts = ["python", "scripts/train_exits.py", "--env", display, "--expert", summary["expert"],
             "--method", summary["method"], "--total-timesteps", str(summary["config"]["total_timesteps"]),
             "--seed", str(summary["seed"]), "--out", out]
    if summary["method"] == "ztw":
        if not method.get("cascade", True):
            parts.append("--ensemble-only")
        if method.get("ensemble") is None:
            parts.append("--cascade-only")
        elif method.get("ensemble") == "additive":
            parts.append("--additive")
        if not method.get("detach_cascade", True):
            parts.append("--no-stop-gradient")
    return shlex.join(parts)


def exits_section(
    summary: Mapping[str, Any], curves: Mapping[str, ScalarCurve], heads_file: str, png_file: str, command: str
) -> str:
    """The README section of one method's exits: what they are, how they were trained, how well they imitate."""
    method = summary["method"]
    steps, wall = int(summary["timesteps"]), float(summary["wall_time_s"])
    threads = summary.get("torch_threads")
    threads_text = "all cores" if threads is None else f"{threads} torch thread{'s' if threads != 1 else ''}"
    rows = []
    for tag in _exit_tags(curves, "agreement"):
        name = tag.split("/", 1)[1]
        kl = curves.get(f"kl/{name}")
        kl_text = f"{kl.final_mean():.4f}" if kl is not None else "–"
        c = curves[tag]
        rows.append(f"| {name} | {c.values[0]:.3f} | {c.final_mean():.3f} | {kl_text} |")
    ret = curves.get("rollout/episode_return")
    ret_text = (
        f"\nThe early-exit policy's training games (a random exit acts at each step, sticky actions) scored "
        f"{ret.final_mean():.1f} on average over the last {min(FINAL_ROUNDS, len(ret.values))} rounds that ended one."
        if ret is not None else ""
    )
    wiring = {
        "ztw": "Cascaded ICs (stop-gradient) + geometric ensembles",
        "sdn": "Independent ICs (SDN); PBEE plays these heads with the patience rule",
    }.get(method, method)
    return f"""## Early exits: {method} (`{heads_file}`)

{wiring}, trained by behavioural cloning on the early-exit policy's own states (ZTW appendix A.2): {steps:,}
env steps in {summary['rounds']:,} rounds, {wall / 3600:.2f} h wall time ({threads_text}).
Agreement is the share of freshly visited states (before each round's update) where the exit's argmax action equals
the expert's; KL is KL(expert ‖ exit) on the same states. "final" = mean of the last {FINAL_ROUNDS} rounds.

| exit | agreement, first round | agreement, final | KL, final |
|---|---|---|---|
{chr(10).join(rows)}
{ret_text}

![{method} exits training]({png_file})

```bash
{command}
```
"""


def publish_exits(run_dir: str | Path, agent_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Publish the heads of ``run_dir`` (a ``train_exits.py`` run) into ``out_dir`` (default ``agent_dir``); returns
    what was written.

    The run's ``exits-<method>.pt`` must have been trained on ``agent_dir/expert.zip`` (same weights): heads of
    another expert would load into the folder only to be refused later. ``out_dir/README.md`` gets (or has
    replaced) its ``exits-<method>`` section; other sections are left as they are. A separate ``out_dir`` keeps
    heads that are not part of the shipped agent (ZTW ablations) beside their own card; sweep them with
    ``scripts/sweep.py --agent AGENT_DIR --heads-dir OUT_DIR``.
    """
    from ee_rl.core.fingerprint import file_sha256
    from ee_rl.rl.checkpoint import load_model, weights_sha256
    from ee_rl.rl.games import display_name

    run_dir, agent_dir = Path(run_dir), Path(agent_dir)
    out_dir = agent_dir if out_dir is None else Path(out_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"{summary_path} not found: pass the directory of a finished train_exits.py run")
    try:
        summary = json.loads(summary_path.read_text())
        method = summary["method"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{summary_path} is not a train_exits.py summary (no 'method')") from None
    heads_path = run_dir / f"exits-{method}.pt"
    payload = read_agent_heads(heads_path)
    expert = agent_dir / "expert.zip"
    if not expert.is_file():
        raise UserError(f"{expert} not found: publish the expert first (scripts/publish_expert.py)")
    sha = weights_sha256(load_model(expert, device="cpu"))
    if payload.get("expert_sha256") not in (sha, file_sha256(expert)):  # weights' hash, or the zip's (older heads)
        raise UserError(
            f"{heads_path} was trained on another expert (sha256 {str(payload.get('expert_sha256'))[:12]}…), not "
            f"{expert} (weights sha256 {sha[:12]}…)"
        )
    curves = read_scalars(run_dir / "tb")
    game = display_name(summary["game"])
    heads_name, png_name = f"exits-{method}.pt", f"exits-{method}-training.png"
    section = exits_section(
        summary, curves, heads_name, png_name, train_exits_command(summary, game, str(run_dir))
    )
    png = exits_training_png(curves, f"{game}: {method} exits, behavioural cloning on the frozen expert")
    readme_path = out_dir / "README.md"
    title = f"# {game} agent\n" if out_dir == agent_dir else f"# {game}: exits trained on {expert}\n"
    readme = readme_path.read_text() if readme_path.is_file() else title
    readme = upsert_section(readme, f"exits-{method}", section)

    ensure_writable_dir(out_dir)
    atomic_write_bytes(out_dir / heads_name, heads_path.read_bytes())
    atomic_write_bytes(out_dir / png_name, png)
    atomic_write_text(readme_path, readme)
    final = {tag: curves[tag].final_mean() for tag in _exit_tags(curves, "agreement")}
    return {"method": method, "timesteps": int(summary["timesteps"]), "heads": str(out_dir / heads_name),
            "final_agreement": final}
