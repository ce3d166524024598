"""Publish a trained PPO expert into an agent folder (``agents/<Game>/``), ready to use and to reproduce.

The folder gets ``expert.zip`` (acting-only SB3 zip: weights without Adam's state, loads with plain
``PPO.load``), ``expert_eval.json`` (full games, sticky actions, argmax actions, fixed seeds),
``learning_curve.csv`` / ``.png`` (training games' raw scores vs env steps, from the run's ``episodes.csv``)
and a ``README.md`` saying how the expert was trained and evaluated. Every number comes from the checkpoint,
the run's files or the evaluation done here; nothing is written unless all of them could be computed.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import hashlib
import io
import os
import platform
import shlex
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO

import ee_rl
from ee_rl.devices import resolve_device
from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_writable_dir
from ee_rl.rl.agent_card import carry_sections
from ee_rl.rl.checkpoint import load_model, meta
from ee_rl.rl.expert import DEFAULT_CONFIG, EpisodeCsvCallback, ExpertConfig, evaluate_model, load_expert_config
from ee_rl.rl.games import display_name, rom_id

#: No file shipped in ``agents/`` may be larger (issue 3).
MAX_AGENT_FILE_BYTES = 20_000_000
#: Training games averaged by the learning curve's rolling mean (rl-zoo / SB3 report the last 100).
ROLLING_WINDOW = 100
EXPERT_FILE = "expert.zip"
EVAL_FILE = "expert_eval.json"
CURVE_CSV = "learning_curve.csv"
CURVE_PNG = "learning_curve.png"
README_FILE = "README.md"
#: Zip entry timestamp of ``expert.zip``: fixed so that the same weights always give the same bytes (and sha256).
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


class ReturnBelowMinimum(UserError):
    """The evaluation's mean return is below the required minimum; nothing was written."""

    def __init__(self, message: str, evaluation: dict[str, Any]) -> None:
        super().__init__(message)
        self.evaluation = evaluation


@dataclasses.dataclass
class EpisodeLog:
    """The training games of a run (``episodes.csv``): env steps at the end of each game, raw score, length, wall time."""

    path: Path
    timesteps: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    wall_time_s: np.ndarray

    def __len__(self) -> int:
        return len(self.timesteps)


def read_episode_log(path: str | Path, max_timesteps: int | None = None) -> EpisodeLog:
    """Read a run's ``episodes.csv`` (as written by :class:`EpisodeCsvCallback`), keeping games logged at or
    before ``max_timesteps`` (a run still training logs games after the checkpoint being published).

    Raises :class:`UserError` naming the file if it is missing, lacks a column, has a malformed row or keeps no game.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"training log not found: {path} (the run directory's episodes.csv draws the learning curve; "
            "pass the right --run-dir, or --no-curve to publish without a learning curve)"
        )
    fields = EpisodeCsvCallback.FIELDS
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in fields if f not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} lacks column(s) {', '.join(missing)}; expected a header {','.join(fields)}")
        rows: list[tuple[float, float, float, float]] = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(tuple(float(row[f]) for f in fields))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise UserError(f"{path} line {line}: expected numbers for {','.join(fields)}, got {row}") from None
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(fields))
    if max_timesteps is not None:
        table = table[table[:, 0] <= max_timesteps]
    if len(table) == 0:
        limit = f" at or before step {max_timesteps}" if max_timesteps is not None else ""
        raise UserError(f"{path} holds no training game{limit}: nothing to draw a learning curve from")
    return EpisodeLog(
        path=path,
        timesteps=table[:, 0].astype(np.int64),
        returns=table[:, 1],
        lengths=table[:, 2].astype(np.int64),
        wall_time_s=table[:, 3],
    )


def rolling_mean(values: np.ndarray, window: int = ROLLING_WINDOW) -> np.ndarray:
    """Mean of each value and the up to ``window - 1`` values before it (shorter windows at the start)."""
    if window < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    values = np.asarray(values, dtype=np.float64)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def learning_curve_csv(log: EpisodeLog, window: int = ROLLING_WINDOW) -> str:
    """The training games as CSV plus a ``return_mean_<window>`` column (rolling mean of the raw scores)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*EpisodeCsvCallback.FIELDS, f"return_mean_{window}"])
    for steps, ret, length, wall, mean in zip(
        log.timesteps, log.returns, log.lengths, log.wall_time_s, rolling_mean(log.returns, window)
    ):
        writer.writerow([int(steps), float(ret), int(length), float(wall), round(float(mean), 4)])
    return out.getvalue()


def learning_curve_png(
    log: EpisodeLog, game: str, evaluation: dict[str, Any] | None = None, window: int = ROLLING_WINDOW
) -> bytes:
    """PNG of the training games' raw scores (faint dots) and their rolling mean (line) vs env steps.

    With ``evaluation`` (from :func:`evaluate_model`), its mean ± std is drawn at the checkpoint's step count.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=120)
    FigureCanvasAgg(fig)  # explicit Agg: no GUI backend, no pyplot global state
    ax = fig.add_subplot()
    ax.scatter(log.timesteps, log.returns, s=4, alpha=0.2, color="tab:blue", linewidths=0, label="training game")
    ax.plot(log.timesteps, rolling_mean(log.returns, window), color="tab:blue", lw=2, label=f"mean of last {window}")
    if evaluation is not None:
        ax.errorbar(
            [evaluation["timesteps"]], [evaluation["return_mean"]], yerr=[evaluation["return_std"]],
            fmt="o", color="tab:red", capsize=4,
            label=f"evaluation: {evaluation['episodes']} games, sticky p={evaluation['sticky_prob']}, argmax",
        )
    ax.set_xlabel("env steps (agent steps, frame skip 4)")
    ax.set_ylabel("game score (raw)")
    ax.set_title(f"{game}: PPO expert learning curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def expert_bytes(model: PPO) -> bytes:
    """``model`` as an SB3 zip that can act but not resume training, as small and reproducible as possible.

    SB3's ``PPO.load`` insists on a ``policy.optimizer.pth`` entry (``set_parameters(exact_match=True)``), so the
    optimizer is kept but with an empty state (Adam's moments are twice the weights' size and only matter for
    further training; a model loaded from this file restarts Adam from zero if trained on). The last rollout's
    observations are dropped too (SB3 resets the env when they are missing). Entries are deflated and carry a
    fixed timestamp, so the same weights always give the same bytes, on whatever device ``model`` runs (torch
    records each tensor's device in the file, so the policy is saved from the CPU). ``model`` is left unchanged.
    """
    optimizer = model.policy.optimizer
    kept = (optimizer.state, model._last_obs, model._last_episode_starts)
    device = model.policy.device
    try:
        model.policy.to("cpu")
        optimizer.state = collections.defaultdict(dict)
        model._last_obs = None
        model._last_episode_starts = None
        raw = io.BytesIO()
        model.save(raw)
    finally:
        optimizer.state, model._last_obs, model._last_episode_starts = kept
        model.policy.to(device)
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as src, zipfile.ZipFile(packed, "w") as dst:
        for item in src.infolist():
            entry = zipfile.ZipInfo(item.filename, date_time=_ZIP_DATE_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, src.read(item.filename), compresslevel=6)
    return packed.getvalue()


def check_out_dir(path: str | Path) -> Path:
    """Check that ``path`` is, or could be created as, a writable directory, without creating anything."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "exists and is not a directory" if probe == path else f"cannot be created: {probe} is not a directory"
        raise UserError(f"output path {path} {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output directory {path} is not writable ({probe} does not allow writing)")
    return path


def library_versions() -> dict[str, str]:
    """Versions of the packages that define how the expert acts and is evaluated."""
    import ale_py
    import gymnasium
    import stable_baselines3
    import torch

    return {
        "ee_rl": ee_rl.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "ale_py": ale_py.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """One line describing this machine: CPU, cores, memory, OS, torch build, GPU, training threads."""
    import torch

    cores = os.cpu_count() or 1
    parts = [_cpu_model(), f"{cores} logical CPUs"]
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        parts.append(f"{memory / 2**30:.0f} GiB RAM")
    except (ValueError, OSError, AttributeError):
        pass
    parts.append(f"{platform.system()} {platform.release()} {platform.machine()}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    parts.append(f"torch {torch.__version__}, {gpu}")
    # train_policy.py calls fast_ppo.tune_cpu(), which gives torch one intra-op thread per logical CPU.
    parts.append(f"training with {cores} torch threads (one per logical CPU)")
    return ", ".join(parts)


def train_command(game: str, run_dir: str, run_meta: dict[str, Any], file_config: ExpertConfig) -> str:
    """The ``train_policy.py`` command that starts a run with the saved run's settings.

    Flags are added only where the run differs from ``file_config`` (the YAML config's values for the game).
    """
    parts = ["python", "scripts/train_policy.py", "--env", game, "--out", run_dir]
    if int(run_meta.get("seed", 0)) != 0:
        parts += ["--seed", str(run_meta["seed"])]
    run_config = run_meta.get("config") or dataclasses.asdict(file_config)
    history = run_meta.get("schedule_history")
    if history:  # the target the run started with; later targets come from resume_commands
        run_config = {**run_config, "total_timesteps": history[0]["total_timesteps"]}
    elif "total_timesteps" in run_meta:
        run_config = {**run_config, "total_timesteps": run_meta["total_timesteps"]}
    if run_config.get("total_timesteps", file_config.total_timesteps) != file_config.total_timesteps:
        parts += ["--total-timesteps", str(run_config["total_timesteps"])]
    if run_config.get("n_envs", file_config.n_envs) != file_config.n_envs:
        parts += ["--n-envs", str(run_config["n_envs"])]
    command = shlex.join(parts)
    others = {k for k, v in run_config.items() if k not in ("total_timesteps", "n_envs")}
    if any(run_config[k] != getattr(file_config, k, None) for k in others):
        command += " --config <a YAML file holding the hyper-parameters below>"
    return command


def resume_commands(game: str, run_dir: str, run_meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The resumes that changed the run's target, as ``{"from_step", "total_timesteps", "command"}``.

    Read from the schedule history that ``train_policy.py`` saves in the checkpoint; empty when the run kept the
    target it started with (or predates that history).
    """
    base = ["python", "scripts/train_policy.py", "--env", game, "--out", run_dir, "--resume"]
    return [
        {**entry, "command": shlex.join([*base, "--total-timesteps", str(entry["total_timesteps"])])}
        for entry in (run_meta.get("schedule_history") or [])[1:]
    ]


def _training_commands_text(train_cmd: str, resumes: list[dict[str, Any]]) -> str:
    """The card's bullet on how the run was made: one command, or the start and each resume that moved the target."""
    restart_note = (
        "the environments restart on resume, so a run stopped at other points\n  does not give bit-identical weights"
    )
    if not resumes:
        return (f"- Command: `{train_cmd}`; after a stop, the same command with `--resume` continues from\n"
                f"  `checkpoints/latest.zip` ({restart_note}).")
    resumed = ";\n".join(
        f"  at {entry['from_step']:,} env steps `{entry['command']}` (the linear schedules go on from where they were "
        f"and now reach 0 at {entry['total_timesteps']:,} steps)"
        for entry in resumes
    )
    return (f"- Commands: `{train_cmd}`, then\n{resumed}.\n"
            f"  After a stop, the last command continues from `checkpoints/latest.zip` ({restart_note}).")


def publish_command(
    game: str, checkpoint: str, out: str, run_dir: str | None, episodes: int, seed: int,
    config: str | None, min_return: float | None,
) -> str:
    """The ``publish_expert.py`` command line for these settings (to reproduce the evaluation)."""
    parts = ["python", "scripts/publish_expert.py", "--env", game, "--checkpoint", checkpoint]
    parts += ["--run-dir", run_dir] if run_dir is not None else ["--no-curve"]
    parts += ["--out", out, "--episodes", str(episodes), "--seed", str(seed)]
    if config is not None:
        parts += ["--config", config]
    if min_return is not None:
        parts += ["--min-return", f"{min_return:g}"]
    return shlex.join(parts)


def _fmt_hours(seconds: float) -> str:
    return f"{seconds:,.0f} s = {seconds / 3600:.2f} h"


def agent_readme(
    *,
    game: str,
    evaluation: dict[str, Any],
    training: dict[str, Any],
    hyper_parameters: dict[str, Any],
    hyper_parameters_source: str,
    train_cmd: str,
    publish_cmd: str,
    recheck_cmd: str,
    out: str,
    curve: bool,
) -> str:
    """The agent folder's README: what the expert is, how it was trained and evaluated, how to load it."""
    e = evaluation
    returns = ", ".join(f"{r:g}" for r in e["returns"])
    seeds = ", ".join(str(s) for s in e["env_seeds"])
    hp_rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in hyper_parameters.items())
    expert_path = f"{out.rstrip('/')}/{EXPERT_FILE}"
    wall = training["wall_time_s"]
    wall_text = (
        f"{_fmt_hours(wall)} ({training['wall_time_source']})" if wall is not None else "not recorded"
    )
    rate = (
        f" — {training['timesteps'] / wall:,.0f} env steps/s on average" if wall else ""
    )
    curve_text = (
        f"`{CURVE_CSV}` / `{CURVE_PNG}`: the {training['games']:,} training games logged up to the checkpoint "
        f"(whole games' raw scores vs env steps, from `{training['episode_log']}`; PPO itself learned from "
        f"life-loss terminals and sign-clipped rewards), with the mean of the last {ROLLING_WINDOW} games.\n\n"
        f"![learning curve]({CURVE_PNG})\n"
        if curve
        else "No learning curve was published with this evaluation (`--no-curve`).\n"
    )
    versions = ", ".join(f"{k} {v}" for k, v in e["versions"].items())
    return f"""# {game} PPO expert

`{EXPERT_FILE}` is a PPO agent (stable-baselines3, NatureCNN policy `ee_rl.rl.fast_ppo.ChannelsLastCnnPolicy`)
for Atari {game}, trained with `ee_rl`. It scores **{e['return_mean']:.2f} ± {e['return_std']:.2f}** (mean ± std)
over {e['episodes']} full games with sticky actions p = {e['sticky_prob']:g} and argmax actions.

## Evaluation (`{EVAL_FILE}`)

| games | mean | std | min | max | mean length (agent steps) |
|---|---|---|---|---|---|
| {e['episodes']} | {e['return_mean']:.2f} | {e['return_std']:.2f} | {e['return_min']:g} | {e['return_max']:g} | {e['length_mean']:.0f} |

- Protocol: full games (no life-loss terminals), raw scores, sticky actions p = {e['sticky_prob']:g} at the agent
  step, argmax (deterministic) actions, frame skip 4, no-op starts, ALE's cap of 108,000 frames per game.
- Scores per game: {returns}.
- Env seeds: {seeds} (base seed {e['seed']}; each env plays its share of the games in turn).
- Checkpoint evaluated: `{e['checkpoint']}` at {e['timesteps']:,} env steps (sha256 `{e['checkpoint_sha256']}`);
  `{EXPERT_FILE}` has the same weights (sha256 `{e['expert_sha256']}`, {e['expert_bytes']:,} bytes).
- Evaluated on {e['date']} with {versions}; took {e['eval_wall_time_s']:g} s.

Reproduce this evaluation from the shipped `{EXPERT_FILE}` (same actions as the checkpoint, so the same scores;
it writes `{EVAL_FILE}` and a README into a scratch folder):

```bash
{recheck_cmd}
```

This folder was written by the command below (it evaluates the checkpoint again and rewrites the folder; the
scores match while the checkpoint still has the sha256 above):

```bash
{publish_cmd}
```

## Training

{_training_commands_text(train_cmd, training.get("resume_commands") or [])}
- Env steps: {training['timesteps']:,}{rate}.
- Wall time: {wall_text}.
- Machine: {training['machine']}.
- Environment: frame skip 4 with max-pool, 84×84 grayscale, 4-frame stack, FIRE on reset, up to 30 no-op starts,
  sticky actions p = {hyper_parameters.get('sticky_prob', e['sticky_prob'])} per agent step; training episodes end on
  life loss with sign-clipped rewards (`ee_rl/rl/envs.py`).

Hyper-parameters ({hyper_parameters_source}; `lin_X` decays linearly from X to 0 over `total_timesteps`):

| name | value |
|---|---|
{hp_rows}

{curve_text}
## Loading

```python
from stable_baselines3 import PPO  # ee_rl must be importable: the policy class is ee_rl.rl.fast_ppo.ChannelsLastCnnPolicy
from ee_rl.rl.envs import make_atari_env

model = PPO.load("{expert_path}", device="cpu")
env = make_atari_env("{game}", n_envs=1, training=False, sticky_prob={e['sticky_prob']:g}, seed=0)
obs = env.reset()
action, _ = model.predict(obs, deterministic=True)
```

`ee_rl.rl.checkpoint.load_model("{expert_path}", game="{game}")` does the same and checks the game.
`{EXPERT_FILE}` holds no optimizer state (only what acting needs): continue training from the run's
`checkpoints/latest.zip` instead.
"""


def load_checkpoint_snapshot(checkpoint: str | Path, game: str, device: str = "cpu") -> tuple[PPO, str]:
    """Load ``checkpoint`` (game checked) and return it with the sha256 of exactly the bytes loaded.

    The file is read once and loaded from a private copy: a training run that atomically replaces it meanwhile
    (every ``checkpoint_every`` steps) cannot make the recorded hash describe other weights.
    """
    path = Path(checkpoint)
    if not path.is_file():
        return load_model(path, device=device, game=game), ""  # raises load_model's own "not found" error
    data = path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="ee_rl_publish_") as tmp:
        copy = Path(tmp) / path.name
        copy.write_bytes(data)
        try:
            model = load_model(copy, device=device, game=game)
        except UserError as exc:  # name the user's file, not the private copy
            raise UserError(str(exc).replace(str(copy), str(path))) from None
    return model, hashlib.sha256(data).hexdigest()


def publish_expert(
    env: str,
    checkpoint: str | Path,
    out: str | Path,
    *,
    run_dir: str | Path | None = None,
    episodes: int = 10,
    seed: int = 0,
    min_return: float | None = None,
    machine: str | None = None,
    config: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate a PPO checkpoint and publish it into ``out`` as an agent folder; returns ``expert_eval.json``'s dict.

    ``run_dir`` is the training run's directory (its ``episodes.csv`` draws the learning curve and gives the
    training wall time); ``None`` publishes without a learning curve. The evaluation plays ``episodes`` full games
    with the config's sticky-action probability and argmax actions, on env seeds ``seed, seed + 1, ...``
    (:func:`ee_rl.rl.expert.evaluate_model`). With ``min_return``, a mean below it raises
    :class:`ReturnBelowMinimum` and nothing is written. Inputs are checked before the (slow) evaluation.
    """
    game = rom_id(env)
    name = display_name(game)
    if episodes < 1:
        raise UserError(f"episodes must be a positive integer (full games to evaluate), got {episodes}")
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    if min_return is not None and not np.isfinite(min_return):
        raise UserError(f"min return must be a finite number, got {min_return}")
    device = str(resolve_device(device))
    check_out_dir(out)
    file_config = load_expert_config(config, game)
    model, checkpoint_sha256 = load_checkpoint_snapshot(checkpoint, game, device)
    run_meta = meta(model)
    log = read_episode_log(Path(run_dir) / "episodes.csv", model.num_timesteps) if run_dir is not None else None
    evaluation = evaluate_model(model, game, episodes, seed, file_config.sticky_prob)
    result: dict[str, Any] = {
        "game": game,
        "episodes": evaluation["episodes"],
        "return_mean": evaluation["return_mean"],
        "return_std": evaluation["return_std"],
        "return_min": evaluation["return_min"],
        "return_max": evaluation["return_max"],
        "returns": evaluation["returns"],
        "length_mean": evaluation["length_mean"],
        "sticky_prob": evaluation["sticky_prob"],
        "deterministic": evaluation["deterministic"],
        "seed": seed,
        "env_seeds": evaluation["env_seeds"],
        "eval_wall_time_s": evaluation["eval_wall_time_s"],
        "timesteps": int(model.num_timesteps),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "versions": library_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if min_return is not None and result["return_mean"] < min_return:
        raise ReturnBelowMinimum(
            f"mean return {result['return_mean']:.2f} over {result['episodes']} games "
            f"(min {result['return_min']:g}, max {result['return_max']:g}) is below --min-return {min_return:g}; "
            f"nothing written to {out}",
            result,
        )
    expert = expert_bytes(model)
    if len(expert) > MAX_AGENT_FILE_BYTES:
        raise UserError(f"the expert is {len(expert):,} bytes, over the {MAX_AGENT_FILE_BYTES:,}-byte limit for agents/")
    result["expert_sha256"] = hashlib.sha256(expert).hexdigest()
    result["expert_bytes"] = len(expert)

    if log is not None:
        wall, wall_source = float(log.wall_time_s[-1]), f"training clock at the last game logged in {log.path}"
    elif "wall_time_s" in run_meta:
        wall, wall_source = float(run_meta["wall_time_s"]), "training clock saved in the checkpoint"
    else:
        wall, wall_source = None, "not recorded"
    training = {
        "timesteps": int(model.num_timesteps),
        "wall_time_s": wall,
        "wall_time_source": wall_source,
        "games": len(log) if log is not None else None,
        "episode_log": str(log.path) if log is not None else None,
        "machine": machine or machine_description(),
    }
    if run_meta.get("config"):
        hyper_parameters = {**run_meta["config"], "total_timesteps": run_meta.get("total_timesteps")}
        hp_source = "saved in the checkpoint by train_policy.py"
    else:
        hyper_parameters = dataclasses.asdict(file_config)
        hp_source = f"from {config or DEFAULT_CONFIG}: the checkpoint does not record its own"
    run_dir_text = str(run_dir) if run_dir is not None else _run_dir_of(model, checkpoint)
    training["train_command"] = train_command(name, run_dir_text, run_meta, file_config)
    resumes = resume_commands(name, run_dir_text, run_meta)
    if resumes:
        training["resume_commands"] = resumes
    result["training"] = training
    out_text = str(out)
    readme = agent_readme(
        game=name,
        evaluation=result,
        training=training,
        hyper_parameters=hyper_parameters,
        hyper_parameters_source=hp_source,
        train_cmd=training["train_command"],
        publish_cmd=publish_command(
            name, str(checkpoint), out_text, None if run_dir is None else str(run_dir), episodes, seed,
            None if config is None else str(config), None,
        ),
        recheck_cmd=publish_command(
            name, f"{out_text.rstrip('/')}/{EXPERT_FILE}", f"/tmp/{name.lower()}_expert_check", None, episodes, seed,
            None if config is None else str(config), None,
        ),
        out=out_text,
        curve=log is not None,
    )
    curve_files = (
        {CURVE_CSV: learning_curve_csv(log).encode(), CURVE_PNG: learning_curve_png(log, name, result)}
        if log is not None
        else {}
    )

    # Everything is computed: now write, each file atomically (a crash leaves old or new files, never half ones).
    out_dir = ensure_writable_dir(out)
    atomic_write_bytes(out_dir / EXPERT_FILE, expert)
    atomic_write_json(out_dir / EVAL_FILE, result)
    for file_name, data in curve_files.items():
        atomic_write_bytes(out_dir / file_name, data)
    old_readme = out_dir / README_FILE
    if old_readme.is_file():  # keep what later steps (exits, sweeps) added to the card
        readme = carry_sections(old_readme.read_text(), readme)
    atomic_write_text(out_dir / README_FILE, readme)
    return result


def _run_dir_of(model: PPO, checkpoint: str | Path) -> str:
    """The training run's directory, from the TensorBoard folder saved in the model or the checkpoint's place."""
    tb = getattr(model, "tensorboard_log", None)
    if tb and Path(tb).name == "tb":
        return str(Path(tb).parent)
    path = Path(checkpoint)
    if path.parent.name == "checkpoints":
        return str(path.parent.parent)
    return "<run directory>"
