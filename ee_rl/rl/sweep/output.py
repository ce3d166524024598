"""What a sweep writes and reads: ``sweep.csv``, ``sweep.json`` and ``sweep.png``, and its table for the terminal.

Every file is written atomically; the CSV is the one other tools append to (SelfXit adds a ``selfxit`` row) and
read back (budget selection from an existing table).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ee_rl.core import FULL
from ee_rl.errors import UserError
from ee_rl.io import atomic_save_figure, atomic_write_json, atomic_write_text
from ee_rl.rl.games import display_name, rom_id
from ee_rl.rl.sweep.rows import RETURNS_ORDER, SweepResult, SweepRow, rows_by_method
from ee_rl.rl.sweep.settings import SweepSettings

#: Every CSV has these columns, then ``exit_rate_1 .. exit_rate_M`` and ``exit_rate_final``.
CSV_COLUMNS = (
    "method",
    "threshold",
    "rule",
    "episodes",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "inference_time",
    "agreement",
    "us_per_decision",
    "decisions",
)


def csv_columns(num_ics: int) -> list[str]:
    """The CSV header for agents with ``num_ics`` internal exits."""
    return [*CSV_COLUMNS, *(f"exit_rate_{m + 1}" for m in range(num_ics)), "exit_rate_final"]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if value == FULL else repr(round(value, 6))
    return str(value)


def write_csv(rows: Sequence[SweepRow], path: str | Path) -> Path:
    """Write one line per row (columns: :func:`csv_columns`), atomically."""
    if not rows:
        raise ValueError("write_csv needs at least one row")
    num_ics = len(rows[0].exit_rates) - 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(num_ics))
    for r in rows:
        values = [getattr(r, c) for c in CSV_COLUMNS] + list(r.exit_rates)
        writer.writerow([_format(v) for v in values])
    return atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[SweepRow]:
    """Read a sweep CSV written by :func:`write_csv`; a missing or malformed file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep table not found: {path}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in (*CSV_COLUMNS, "exit_rate_final") if c not in header]
        if missing:
            raise UserError(f"{path} is not a sweep table: missing column(s) {', '.join(missing)}")
        exits = [c for c in header if c.startswith("exit_rate_") and c != "exit_rate_final"] + ["exit_rate_final"]
        rows = []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(
                    SweepRow(
                        method=record["method"],
                        threshold=float(record["threshold"]),
                        rule=record["rule"],
                        episodes=int(record["episodes"]),
                        **{c: float(record[c]) for c in CSV_COLUMNS[4:-1]},
                        decisions=int(record["decisions"]),
                        exit_rates=tuple(float(record[c]) for c in exits),
                    )
                )
            except (TypeError, ValueError) as exc:
                raise UserError(f"{path} line {line}: bad value ({exc})") from None
    if not rows:
        raise UserError(f"{path} holds no rows")
    return rows


def write_json(result: SweepResult, path: str | Path, selections: dict[str, Any] | None = None) -> Path:
    """Write the whole sweep (and any budget selections) as JSON, atomically."""
    return atomic_write_json(path, {**result.to_dict(), "selections": selections or {}})


def read_json(path: str | Path) -> list[SweepRow]:
    """The rows of a ``sweep.json`` written by :func:`write_json`, with their per-game returns (the CSV has none).

    Per-game returns are kept only from files that list them in game-slot order (``"returns_order": "slot"``, every
    sweep since that order was introduced): only those can be differenced game by game between settings. Older
    files list them in the order the games finished, so their rows come back without per-game returns.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep results not found: {path}")
    try:
        data = json.loads(path.read_text())
        slot_order = data.get("returns_order") == RETURNS_ORDER
        return [SweepRow.from_dict(r, keep_returns=slot_order) for r in data["rows"]]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path} is not a sweep.json written by scripts/sweep.py ({error})") from None


#: A sweep in progress: a header line (game and settings), then one JSON line per finished setting. Removed once
#: the sweep's files are written.
PROGRESS_FILE = "sweep.rows.jsonl"
#: Settings that change what a row measures (workers and threads change only the µs).
_RESULT_SETTINGS = ("methods", "thresholds", "patience", "episodes", "n_envs", "sticky_prob", "seed",
                    "max_episode_frames")


def _progress_header(game: str, settings: SweepSettings) -> dict[str, Any]:
    return {"game": game, "settings": {k: getattr(settings, k) for k in _RESULT_SETTINGS}}


def start_progress(out_dir: str | Path, game: str, settings: SweepSettings) -> Path:
    """Start ``out_dir``'s progress file (its header) unless an interrupted sweep's is there to be continued."""
    path = Path(out_dir) / PROGRESS_FILE
    if not path.is_file():
        atomic_write_text(path, json.dumps(_progress_header(game, settings)) + "\n")
    return path


def append_progress_row(out_dir: str | Path, row: SweepRow) -> None:
    """Append one finished setting to ``out_dir``'s progress file and flush it to disk, so that an interrupted sweep
    keeps every setting it finished (``scripts/sweep.py --resume`` plays only the others)."""
    with open(Path(out_dir) / PROGRESS_FILE, "a") as handle:
        handle.write(json.dumps(row.to_dict()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_progress_rows(out_dir: str | Path, game: str, settings: SweepSettings) -> list[SweepRow]:
    """The settings an interrupted sweep of the same game and settings finished ([] if there is none).

    A torn last line (a kill mid-write) is dropped; another game or other settings are a :class:`UserError`
    (their rows would not be comparable with the ones still to play).
    """
    path = Path(out_dir) / PROGRESS_FILE
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        header = None
    expected = json.loads(json.dumps(_progress_header(game, settings)))
    if header != expected:
        raise UserError(f"{path} is the progress of another sweep (game or settings differ); delete it to start over")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            rows.append(SweepRow.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            if number < len(lines):
                raise UserError(f"{path} line {number} is not a sweep row; delete the file to start over") from None
    return rows


def plot_sweep(rows: Sequence[SweepRow], path: str | Path, title: str | None = None) -> Path:
    """Return vs inference time: one line per method (mean, ±std band), the expert as a horizontal reference.

    Points are ordered by inference time; the full-policy rows form the expert line, not a method's point.
    Written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r.is_full]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        if full:
            e = full[0]
            ax.axhline(e.return_mean, color="black", linestyle="--", linewidth=1, label="expert (100 %)")
            ax.axhspan(e.return_mean - e.return_std, e.return_mean + e.return_std, color="black", alpha=0.07)
        for method, group in rows_by_method([r for r in rows if not r.is_full]).items():
            group = sorted(group, key=lambda r: (r.inference_time, r.threshold))
            x = np.array([100 * r.inference_time for r in group])
            mean = np.array([r.return_mean for r in group])
            std = np.array([r.return_std for r in group])
            (line,) = ax.plot(x, mean, marker="o", markersize=4, label=method.upper())
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("inference time (% of the expert's FLOPs per decision)")
        ax.set_ylabel("return (mean ± std over games)")
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        return atomic_save_figure(fig, path)
    finally:
        plt.close(fig)


def default_out_dir(game: str) -> Path:
    """``runs/sweep/<Game>/``."""
    return Path("runs") / "sweep" / display_name(rom_id(game))


def write_sweep(result: SweepResult, out_dir: str | Path, selections: dict[str, Any] | None = None) -> list[Path]:
    """Write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    s = result.settings
    title = (
        f"{display_name(result.game)}: return vs inference time "
        f"({s.episodes} games per point, sticky p={s.sticky_prob:g})"
    )
    return [
        write_csv(result.rows, out_dir / "sweep.csv"),
        write_json(result, out_dir / "sweep.json", selections),
        plot_sweep(result.rows, out_dir / "sweep.png", title),
    ]


def format_table(rows: Sequence[SweepRow]) -> str:
    """A plain-text table of the rows (for the terminal)."""
    num_ics = len(rows[0].exit_rates) - 1 if rows else 0
    exit_names = [f"exit{m + 1}" for m in range(num_ics)] + ["final"]
    header = f"{'method':<7}{'rule':<15}{'return':>15}{'cost':>8}{'agree':>7}{'µs/dec':>9}" + "".join(
        f"{n:>7}" for n in exit_names
    )
    lines = [header]
    for r in rows:
        ret = f"{r.return_mean:+.2f}±{r.return_std:.2f}"
        lines.append(
            f"{r.method:<7}{r.rule:<15}{ret:>15}{100 * r.inference_time:>7.1f}%{100 * r.agreement:>6.1f}%"
            f"{r.us_per_decision:>9.1f}" + "".join(f"{100 * x:>6.1f}%" for x in r.exit_rates)
        )
    return "\n".join(lines)
