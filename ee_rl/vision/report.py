"""Report files of a (multi-seed) vision evaluation: CSV tables, a Markdown table in the format of ZTW's Table 1,
the accuracy-vs-inference-time plot and the Hindsight Improvability plot. Every file is written atomically."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ee_rl.io import atomic_write_bytes, atomic_write_text  # noqa: E402
from ee_rl.vision.evaluate import BUDGET_LABELS, SeedEvaluation, budget_accuracy  # noqa: E402
from ee_rl.core.metrics import mean_se  # noqa: E402

METHOD_LABELS = {"sdn": "SDN", "pbee": "PBEE", "ztw": "ZTW"}
METHOD_COLORS = {"sdn": "tab:blue", "pbee": "tab:orange", "ztw": "tab:green"}


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(path: str | Path, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
    """CSV with exactly ``columns``; None / NaN become empty cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row.get(c)) for c in columns])
    return atomic_write_text(path, buffer.getvalue())


def label(method: str) -> str:
    """Display name of a method (``ztw-additive`` → ``ZTW-additive``)."""
    head, _, rest = method.partition("-")
    return METHOD_LABELS.get(head, head) + (f"-{rest}" if rest else "")


def _cell(mean: float | None, se: float | None, signed: bool = False) -> str:
    if mean is None:
        return "—"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text + (f" ± {se:.2f}" if se is not None else "")


def budget_markdown(
    title: str,
    budget: Sequence[Mapping],
    paired: Sequence[Mapping],
    hindsight: Sequence[Mapping],
    backbone_accuracies: Sequence[float],
) -> str:
    """Markdown: the budget table (ZTW Table 1 layout, mean ± SE over seeds), paired differences to SDN, and HI."""
    n = len(backbone_accuracies)
    mean, se = mean_se(list(backbone_accuracies))
    headers = [k for k in BUDGET_LABELS]
    lines = [f"## {title}", "", f"Backbone accuracy (no early exit, cost exactly 100 %): {_cell(mean, se)} % "
             f"over {n} seed(s). Accuracy in %, mean ± standard error over seeds; — = no operating point fits.", "",
             "| Algo | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
    methods = list(dict.fromkeys(r["method"] for r in budget))
    for method in methods:
        cells = {r["budget"]: _cell(r["accuracy_mean"], r["accuracy_se"]) for r in budget if r["method"] == method}
        lines.append(f"| {label(method)} | " + " | ".join(cells[BUDGET_LABELS[h]] for h in headers) + " |")
    if paired:
        lines += ["", "Paired difference to SDN (same split and frozen backbone per seed), accuracy points:", "",
                  "| Algo − SDN | " + " | ".join(headers) + " | seeds |", "|---" * (len(headers) + 2) + "|"]
        for method in dict.fromkeys(r["method"] for r in paired):
            rows = {r["budget"]: r for r in paired if r["method"] == method}
            cells = [_cell(rows[BUDGET_LABELS[h]]["diff_mean"], rows[BUDGET_LABELS[h]]["diff_se"], signed=True)
                     for h in headers]
            seeds = max(rows[BUDGET_LABELS[h]]["n_seeds"] for h in headers)
            lines.append(f"| {label(method)} | " + " | ".join(cells) + f" | {seeds} |")
    if hindsight:
        hi_methods = list(dict.fromkeys(r["method"] for r in hindsight))
        ics = sorted({r["ic"] for r in hindsight})
        lines += ["", "Hindsight Improvability per IC (fraction of IC m's mistakes some earlier IC got right; "
                  "mean over seeds; lower = less waste):", "",
                  "| IC | " + " | ".join(label(m) for m in hi_methods) + " |", "|---" * (len(hi_methods) + 1) + "|"]
        for ic in ics:
            vals = []
            for m in hi_methods:
                v = next((r["hi"] for r in hindsight if r["method"] == m and r["ic"] == ic), None)
                vals.append("—" if v is None else f"{v:.3f}")
            lines.append(f"| {ic} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _save_figure(fig: plt.Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_accuracy_vs_cost(
    seeds: Sequence[SeedEvaluation], methods: Sequence[str], path: str | Path, title: str, step: float = 0.005
) -> Path:
    """Accuracy vs inference time (mean FLOPs / backbone FLOPs): for every budget b on a fine grid, the budget-rule
    accuracy per seed (highest threshold with cost ≤ b), mean ± SE over the seeds with a point under b."""
    max_cost = max(p.cost for s in seeds for m in methods for p in s.methods[m].points)
    min_cost = min(p.cost for s in seeds for m in methods for p in s.methods[m].points)
    budgets = [min_cost + i * step for i in range(int((max_cost - min_cost) / step) + 2)]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in methods:
        xs, means, los, his = [], [], [], []
        for b in budgets:
            values = [v for s in seeds if (v := budget_accuracy(s.methods[method].points, b)) is not None]
            if len(values) < max(1, len(seeds) // 2):
                continue
            mean, se = mean_se(values)
            xs.append(b)
            means.append(mean)
            los.append(mean - (se or 0.0))
            his.append(mean + (se or 0.0))
        color = METHOD_COLORS.get(method.split("-")[0])
        ax.plot(xs, means, label=label(method), color=color, lw=1.6)
        ax.fill_between(xs, los, his, color=color, alpha=0.2, lw=0)
    backbone, _ = mean_se([s.backbone_accuracy for s in seeds])
    ax.axhline(backbone, color="black", ls="--", lw=1, label="backbone (no early exit)")
    ax.axvline(1.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("inference time (mean FLOPs per sample / backbone FLOPs)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title} — {len(seeds)} seed(s), mean ± SE")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small", framealpha=0.9)
    return _save_figure(fig, path)


def plot_hindsight(seed_rows: Sequence[Mapping], path: str | Path, title: str) -> Path:
    """Hindsight Improvability per IC, mean ± SE over seeds, one line per method (ZTW Figure 2)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method in dict.fromkeys(r["method"] for r in seed_rows):
        ics = sorted({r["ic"] for r in seed_rows if r["method"] == method})
        stats = [mean_se([r["hi"] for r in seed_rows if r["method"] == method and r["ic"] == ic
                          and r["hi"] is not None]) for ic in ics]
        xs = [ic for ic, (m, _) in zip(ics, stats) if m is not None]
        ys = [100 * m for m, _ in stats if m is not None]
        es = [100 * (se or 0.0) for m, se in stats if m is not None]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label(method),
                    color=METHOD_COLORS.get(method.split("-")[0]))
    ax.set_xlabel("internal classifier")
    ax.set_ylabel("hindsight improvability (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _save_figure(fig, path)
