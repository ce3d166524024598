"""A training run's learning curve: its ``episodes.csv`` read back, as a CSV with a rolling mean and as a PNG.

The games are the run's training games (raw scores, logged by :class:`ee_rl.rl.expert.EpisodeCsvCallback`);
:func:`ee_rl.rl.publish.publish_expert` ships both files in the agent folder.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np

from ee_rl.errors import UserError
from ee_rl.rl.expert import EpisodeCsvCallback

#: Training games averaged by the learning curve's rolling mean (rl-zoo / SB3 report the last 100).
ROLLING_WINDOW = 100
CURVE_CSV = "learning_curve.csv"
CURVE_PNG = "learning_curve.png"


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
