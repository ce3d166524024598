"""The risk check's outputs: ``summary.json`` (one row per risk, method and ε), ``setup.json`` (how it was run),
``summary.md`` (the README table) and ``cost_vs_epsilon.png``, all written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ee_rl.io import atomic_save_figure, atomic_write_json, atomic_write_text

#: Output files of one risk check (the CLI refuses to replace them without --overwrite).
OUTPUT_FILES = ("summary.json", "setup.json", "summary.md", "cost_vs_epsilon.png")
#: How the table and the plot name the methods.
METHOD_LABELS = {
    "point-estimate": "SelfXit point estimate",
    "shared-ucb": "shared λ, UCB (Fast yet Safe)",
    "per-exit-ucb": "per-exit, UCB",
    "per-exit-ucb-no-split": "per-exit, UCB, no split (diagnostic)",
}


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _rate(row: dict[str, Any], name: str) -> str:
    lo, hi = row[f"{name}_ci"]
    return f"{_pct(row[f'{name}_rate'])} [{_pct(lo)}, {_pct(hi)}]"


def render_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows`` (violation rates with their 95 % intervals, costs), per risk."""
    lines: list[str] = []
    for risk in dict.fromkeys(r["risk"] for r in rows):
        risk_rows = [r for r in rows if r["risk"] == risk]
        # With every non-calibration sample as the test split, the population column would repeat it.
        population = any(r["n_test"] is not None for r in risk_rows)
        test = "the test split" if population else "all non-calibration samples"
        columns = ["method", "ε %", "violation rate % [95 % CI]"]
        columns += ["vs. all non-cal. data % [95 % CI]"] if population else []
        columns += ["i.i.d. draws, exact % [95 % CI]", "mean test risk %", "mean cost %", "backbone alone %"]
        lines += [
            f"**{risk}** risk (% of samples; test = {test}; cost = mean FLOPs / backbone FLOPs on it):",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for r in risk_rows:
            cells = [METHOD_LABELS.get(r["method"], r["method"]), _pct(r["epsilon"], 0), _rate(r, "violation")]
            cells += [_rate(r, "population_violation")] if population else []
            cells += [_rate(r, "iid_violation"), _pct(r["mean_test_risk"], 2), _pct(r["mean_cost"]),
                      _pct(r["backbone_alone_rate"], 0)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_cost_vs_epsilon(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Mean cost vs ε, one line per method and one panel per risk; a cross marks a test-split violation rate
    above the guarantees' δ (its whole 95 % interval), for any method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    risks = list(dict.fromkeys(r["risk"] for r in rows))
    delta = next((r["delta"] for r in rows if r["delta"] is not None), None)
    fig, axes = plt.subplots(1, len(risks), figsize=(5.5 * len(risks), 4.2), squeeze=False)
    for ax, risk in zip(axes[0], risks):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["epsilon"], r["mean_cost"], r) for r in rows if r["risk"] == risk and r["method"] == method)
            if not pts:
                continue
            style = ":" if method.endswith("no-split") else "-"
            ax.plot([100 * e for e, _, _ in pts], [100 * c for _, c, _ in pts], style, marker="o",
                    label=METHOD_LABELS.get(method, method))
            for e, c, r in pts:
                if delta is not None and r["violation_ci"][0] > delta:
                    ax.plot(100 * e, 100 * c, "kx", markersize=10)
        if delta is not None:
            ax.plot([], [], "kx", label=f"test-split violations > δ = {delta:g} (95 % CI)")
        ax.axhline(100, color="grey", lw=0.8)
        ax.set_xlabel("ε: tolerated risk (%)")
        ax.set_ylabel("mean inference cost (% of backbone FLOPs)")
        ax.set_title(f"{title}: {risk} risk")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return atomic_save_figure(fig, path)
    finally:
        plt.close(fig)


def write_outputs(rows: list[dict[str, Any]], setup: dict[str, Any], out_dir: str | Path, title: str) -> list[Path]:
    """Write :data:`OUTPUT_FILES` into ``out_dir``."""
    out_dir = Path(out_dir)
    return [
        atomic_write_json(out_dir / "summary.json", rows),
        atomic_write_json(out_dir / "setup.json", setup),
        atomic_write_text(out_dir / "summary.md", render_table(rows)),
        plot_cost_vs_epsilon(rows, out_dir / "cost_vs_epsilon.png", title),
    ]
