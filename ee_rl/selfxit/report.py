"""SelfXit reports: one JSON-ready dict per run and its Markdown rendering, written atomically."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ee_rl.io import atomic_write_json, atomic_write_text
from ee_rl.selfxit.evaluate import HeldOutResult
from ee_rl.selfxit.latency import LatencyTable
from ee_rl.selfxit.pipeline import Calibration, TrainedHeads


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def calibration_report(calibration: Calibration, heads: TrainedHeads | None = None) -> dict[str, Any]:
    """Temperatures, thresholds, per-exit validation numbers and the chosen subset (with its eq. 4 score)."""
    sub = calibration.subset
    exits = []
    for m, e in enumerate(calibration.exits):
        row = dataclasses.asdict(e)
        row["exit"] = m
        row["selected"] = m in sub.subset
        if heads is not None:
            row["head"] = heads.chosen[m].spec.describe()
            row["head_spec"] = heads.chosen[m].spec.to_dict()
            row["trials"] = [
                {"head": t.spec.describe(), "agreement": t.agreement, "flops": t.flops} for t in heads.trials[m]
            ]
        exits.append(row)
    return {
        "tolerance": calibration.tolerance,
        "temperatures": list(calibration.temperatures),
        "thresholds": list(calibration.thresholds),
        "subset": list(sub.subset),
        "subset_stages": [calibration.exits[m].stage for m in sub.subset],
        "subset_score": sub.score,
        "subset_flops_saved_per_sample": sub.flops_saved_per_sample,
        "backbone_flops": calibration.backbone_flops,
        "validation": {
            "samples": sub.num_samples,
            "estimated_accuracy_drop": sub.estimated_accuracy_drop,
            "hit_rates": list(sub.hit_rates),
            "hit_agreements": list(sub.agreements),
            "inference_time": 1.0 - sub.flops_saved_per_sample / calibration.backbone_flops,
        },
        "exits": exits,
        "guarantee": guarantee_report(calibration),
    }


def guarantee_report(calibration: Calibration) -> dict[str, Any] | None:
    """What a risk-controlled calibration certified (None without a guarantee): ε, δ, the risk and bound, the
    split of the validation samples, the tested path and the chosen thresholds."""
    result = calibration.guarantee
    if result is None:
        return None
    control = result.control
    chosen = control.chosen
    return {
        "epsilon": control.epsilon,
        "delta": control.delta,
        "risk": result.risk,
        "bound": control.bound,
        "n_cal": control.num_samples,
        "n_fit": result.fit_table.num_samples,
        "path": "SelfXit's per-exit thresholds (T / 2^n each) and best subset at tolerance T, after an on-ramp of "
        f"T = 0's thresholds raised to floors from 0.999999 down; {len(control.path)} distinct configurations, "
        "fitted on the n_fit samples",
        "path_length": len(control.path),
        "certified": control.num_rejected,
        "chosen_tolerance": None if chosen.subset == () else chosen.parameter,
        "chosen_floor": None if chosen.subset == () else chosen.floor,
        "thresholds": list(chosen.thresholds),
        "subset": list(chosen.subset),
        "empirical_risk": control.empirical_risk,
        "p_value": control.p_values[control.chosen_index] if control.chosen_index >= 0 else None,
        "upper_bound": control.upper_bound,
    }


def held_out_report(result: HeldOutResult) -> dict[str, Any]:
    """The held-out evaluation as a dict."""
    return dataclasses.asdict(result)


def tolerance_row(calibration: Calibration, result: HeldOutResult) -> dict[str, Any]:
    """One tolerance of a sweep on the same heads: its subset, validation estimate and held-out result."""
    return {
        "tolerance": calibration.tolerance,
        "subset_stages": [calibration.exits[m].stage for m in calibration.subset.subset],
        "thresholds": list(calibration.thresholds),
        "estimated_accuracy_drop": calibration.subset.estimated_accuracy_drop,
        "accuracy_drop": result.accuracy_drop,
        "agreement": result.agreement,
        "inference_time": result.inference_time,
        "backbone_ms": result.backbone_ms,
        "early_exit_ms": result.early_exit_ms,
        "backbone_cpu_ms": result.backbone_cpu_ms,
        "early_exit_cpu_ms": result.early_exit_cpu_ms,
    }


def latency_report(table: LatencyTable) -> dict[str, Any]:
    """The latency-vs-batch table as a dict (with the per-row reduction)."""
    d = dataclasses.asdict(table)
    d["rows"] = [
        {**dataclasses.asdict(r), "reduction": r.reduction, "cpu_reduction": r.cpu_reduction} for r in table.rows
    ]
    return d


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ms_pair(backbone: float | None, early_exit: float | None) -> str:
    return "–" if backbone is None or early_exit is None else f"{backbone:.2f} → {early_exit:.2f}"


def _exit_numbers(subset: list[int]) -> str:
    """Exits as the tables number them (1-based; the JSON keeps 0-based indices), or ``none`` (the backbone alone)."""
    return "[" + ", ".join(str(m + 1) for m in subset) + "]" if subset else "none (the backbone alone)"


def _guarantee_lines(g: dict[str, Any] | None) -> list[str]:
    """The guarantee section of the Markdown page (nothing without a guarantee)."""
    if not g:
        return []
    floor = f" raised to ≥ {g['chosen_floor']:.6g}" if g["subset"] and g.get("chosen_floor") else ""
    chosen = (
        f"T = {_pct(g['chosen_tolerance'], 3)}{floor} of the path, exits {_exit_numbers(g['subset'])}, thresholds "
        + ", ".join(_num(g["thresholds"][m], ".4f") for m in g["subset"])
        if g["subset"] else "none certified that saves FLOPs: the backbone alone (risk 0)"
    )
    return [
        f"## Guarantee: P({g['risk']} risk ≤ ε) ≥ 1 − δ over the draw of the validation split",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| ε (= T) / δ | {_pct(g['epsilon'])} / {g['delta']:g} |",
        f"| risk | {g['risk']} |",
        f"| bound, test | {g['bound']} p-values, fixed-sequence testing along the path |",
        f"| n_cal (certifying part) / n_fit (temperatures and path) | {g['n_cal']} / {g['n_fit']} |",
        f"| path | {g['path']} |",
        f"| certified (leading configurations) | {g['certified']} of {g['path_length']} |",
        f"| chosen | {chosen} |",
        f"| empirical risk on n_cal / its {g['bound']} upper bound at δ | {_pct(g['empirical_risk'])} / "
        f"{_pct(g['upper_bound'])} |",
        "",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """A Markdown page for a report made by :func:`ee_rl.selfxit.vision` / :mod:`ee_rl.selfxit.rl` drivers."""
    lines = [f"# SelfXit: {report['name']}", ""]
    if report.get("command"):
        lines += ["Command:", "", "```", report["command"], "```", ""]
    t = report["tolerance"]
    certified = report.get("guarantee")
    meaning = (
        f"T = {_pct(t)} bounds the {certified['risk']} risk with probability ≥ {1 - certified['delta']:.3g}"
        if certified else f"T = {_pct(t)} is the target of the validation estimate below, not a bound on test"
    )
    lines += ["## Result", "", "| quantity | value |", "|---|---|", f"| tolerance T | {_pct(t)} |"]
    if "accuracy_drop" in report:
        lines += [
            f"| backbone accuracy (test split) | {_pct(report['backbone_accuracy'])} |",
            f"| early-exit accuracy (test split) | {_pct(report['accuracy'])} |",
            f"| **accuracy drop (test split)** | **{_pct(report['accuracy_drop'])}** ({meaning}) |",
        ]
    if "return" in report:
        lines += [
            f"| expert return | {_num(report['expert_return'], '+.2f')} ± "
            f"{_num(report['expert_return_std'], '.2f')} |",
            f"| **SelfXit return** | **{_num(report['return'], '+.2f')}** ± {_num(report['return_std'], '.2f')} |",
        ]
    # RL's headline cost is the games' own decisions, with the test states' cost beside it; vision's is the test split.
    played = "return" in report
    source = "decisions in the games" if played else "test split"
    lines += [
        f"| agreement with the backbone (test split) | {_pct(report['test']['agreement'])} |",
        f"| **inference time** (mean FLOPs / backbone FLOPs, {source}) | **{_pct(report['inference_time'])}** |",
    ]
    if played:
        lines.append(f"| inference time on the test split's states | {_pct(report['test']['inference_time'])} |")
    wall = report.get("wall_clock")
    if wall:
        lines.append(f"| wall clock ms, backbone → early exit | {_ms_pair(wall['backbone_ms'], wall['early_exit_ms'])} "
                     f"({wall['what']}) |")
        if wall.get("backbone_cpu_ms") is not None:
            lines.append(f"| CPU time ms, backbone → early exit | "
                         f"{_ms_pair(wall['backbone_cpu_ms'], wall['early_exit_cpu_ms'])} (same calls) |")
    val = report["validation"]
    lines += [
        f"| estimated drop on validation (eq. 3 bound) | {_pct(val['estimated_accuracy_drop'])} |",
        f"| chosen subset (exits / stages) | {_exit_numbers(report['subset'])} / {report['subset_stages']} |",
        f"| K(S) on validation | {report['subset_score']:,} FLOPs "
        f"({report['subset_flops_saved_per_sample']:,.0f} per sample of {report['backbone_flops']:,}) |",
        "",
        *_guarantee_lines(certified),
        "## Exits (validation split; each exit alone)",
        "",
        "| exit | stage | head | C1 FLOPs | C2 FLOPs | temperature | threshold | budget T/2ⁿ | agreement | hit rate "
        "| hit agreement | est. drop | in subset |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["exits"]:
        lines.append(
            f"| {e['exit'] + 1} | {e['stage']} | {e.get('head', '–')} | {e['exit_flops']:,} "
            f"| {e['fallback_flops']:,} "
            f"| {_num(e['temperature'])} | {_num(e['threshold'], '.4f')} | {_pct(e['budget'], 3)} "
            f"| {_pct(e['agreement'])} | {_pct(e['hit_rate'])} | {_pct(e['hit_agreement'])} "
            f"| {_pct(e['estimated_drop'], 3)} | {'yes' if e['selected'] else 'no'} |"
        )
    test = report["test"]
    lines += ["", f"Test split: {test['samples']} samples; exit rates (deployed exits, then the backbone's head): "
              + ", ".join(_pct(r, 1) for r in test["exit_rates"]), ""]
    sweep = report.get("tolerance_sweep")
    if sweep:
        lines += [
            "## Other tolerances on the same heads (test split)",
            "",
            "| T | subset (stages) | est. drop (validation) | accuracy drop | agreement | inference time "
            "| wall clock ms (backbone → early exit) | CPU time ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sweep:
            lines.append(
                f"| {_pct(r['tolerance'], 1)} | {r['subset_stages']} | {_pct(r['estimated_accuracy_drop'])} "
                f"| {_pct(r['accuracy_drop'])} | {_pct(r['agreement'])} | {_pct(r['inference_time'], 1)} "
                f"| {_ms_pair(r['backbone_ms'], r['early_exit_ms'])} "
                f"| {_ms_pair(r.get('backbone_cpu_ms'), r.get('early_exit_cpu_ms'))} |"
            )
        lines.append("")
    lat = report.get("latency")
    if lat:
        lines += [
            f"## Latency vs batch size ({lat['device']}, {lat['threads']} thread(s), median of {lat['repeats']} calls)",
            "",
            f"Model size: backbone {lat['backbone_size_bytes'] / 1024:.1f} KiB, early-exit model "
            f"{lat['early_exit_size_bytes'] / 1024:.1f} KiB. Times in ms per call, backbone → early exit, by the "
            "wall clock and by the thread's CPU time (robust to preemption on a loaded machine). Memory: bytes "
            "allocated during one call (peak of the running sum / total).",
            "",
            "| batch | wall clock ms | ↓ratio | CPU time ms | ↓ratio | FLOPs | backbone peak / total KiB "
            "| early-exit peak / total KiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in lat["rows"]:
            lines.append(
                f"| {r['batch_size']} | {_ms_pair(r['backbone_ms'], r['early_exit_ms'])} | {_pct(r['reduction'], 1)} "
                f"| {_ms_pair(r.get('backbone_cpu_ms'), r.get('early_exit_cpu_ms'))} "
                f"| {_pct(r.get('cpu_reduction'), 1)} "
                f"| {_pct(r['inference_time'], 1)} | {r['backbone_peak_bytes'] / 1024:.1f} / "
                f"{r['backbone_allocated_bytes'] / 1024:.1f} | {r['early_exit_peak_bytes'] / 1024:.1f} / "
                f"{r['early_exit_allocated_bytes'] / 1024:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (atomically); return their paths."""
    out_dir = Path(out_dir)
    report = _clean(report)
    return [atomic_write_json(out_dir / "report.json", report), atomic_write_text(out_dir / "report.md",
                                                                                  render_markdown(report))]
