"""Paper figures drawn from committed sweep tables: return vs inference time, one panel per game (ZTW Figure 3 for
Pong and Q*bert, Figure 6 for the eight games), error bars = standard errors of the mean return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ee_rl.io import atomic_save_figure
from ee_rl.rl.compare import return_se
from ee_rl.rl.sweep import SweepRow

#: Method colours and markers, the same in every panel; methods not listed get matplotlib's next colour.
METHOD_STYLE = {
    "ztw": {"color": "tab:red", "marker": "o"},
    "sdn": {"color": "tab:blue", "marker": "s"},
    "pbee": {"color": "tab:green", "marker": "^"},
    "selfxit": {"color": "tab:purple", "marker": "D"},
}


@dataclass(frozen=True)
class GamePanel:
    """One game's sweep rows, its title and the average human score (None: no line)."""

    title: str
    rows: Sequence[SweepRow]
    human: float | None = None


def plot_return_vs_cost(
    panels: Sequence[GamePanel], path: str | Path, methods: Sequence[str] | None = None, columns: int = 2
) -> Path:
    """One panel per game: each method's mean return ± SE against inference time (% of the expert's FLOPs), the
    expert's return (± SE band) and the human score as horizontal lines. Written atomically as PNG; returns the path.

    ``methods`` limits and orders the methods drawn (default: all, in the order they first appear).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("no game to plot")
    columns = min(columns, len(panels))
    n_rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(5.2 * columns, 3.9 * n_rows), dpi=120, squeeze=False)
    try:
        for ax, panel in zip(axes.flat, panels):
            _draw_panel(ax, panel, methods)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.tight_layout()
        return atomic_save_figure(fig, path)
    finally:
        plt.close(fig)


def _draw_panel(ax: Any, panel: GamePanel, methods: Sequence[str] | None) -> None:
    if not panel.rows:  # a game of the grid whose sweep does not exist yet: say so rather than leave a hole
        ax.set_title(panel.title)
        ax.text(0.5, 0.5, "no sweep yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    full = [r for r in panel.rows if r.is_full]
    if full:
        expert = full[0]
        se = return_se(expert) or 0.0
        ax.axhline(expert.return_mean, color="black", linewidth=1.2, label="expert")
        ax.axhspan(expert.return_mean - se, expert.return_mean + se, color="black", alpha=0.08, linewidth=0)
    if panel.human is not None:
        ax.axhline(panel.human, color="gray", linestyle=":", linewidth=1.2, label="human")
    order = list(methods) if methods is not None else list(dict.fromkeys(r.method for r in panel.rows))
    for method in order:
        group = sorted((r for r in panel.rows if r.method == method and not r.is_full),
                       key=lambda r: (r.inference_time, r.threshold))
        if not group:
            continue
        style = METHOD_STYLE.get(method, {})
        ax.errorbar(
            [100 * r.inference_time for r in group],
            [r.return_mean for r in group],
            yerr=[return_se(r) or 0.0 for r in group],
            capsize=2, markersize=4, linewidth=1.2, label=method.upper() if method != "selfxit" else "SelfXit",
            linestyle="-" if len(group) > 1 else "none", **style,
        )
    episodes = sorted({r.episodes for r in panel.rows})
    games = f"{episodes[0]}" if len(episodes) == 1 else f"{episodes[0]}–{episodes[-1]}"
    ax.set_title(f"{panel.title} ({games} games per point)")
    ax.set_xlabel("inference time (% of the expert's FLOPs)")
    ax.set_ylabel("return (mean ± SE)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
