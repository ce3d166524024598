"""ee_rl.rl.summary and scripts/plot_figure6.py: the across-games table of ZTW's Figure 6 from sweep tables."""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from ee_rl.errors import UserError
from ee_rl.rl.summary import SUMMARY_COLUMNS, summarize_game, summary_markdown, write_summary_csv
from ee_rl.rl.sweep import FULL, write_csv
from tests.rl.test_compare import EXPERT_GAMES, row, rows

ROOT = Path(__file__).resolve().parents[2]


def test_summary_takes_the_cheapest_setting_within_five_percent_per_method() -> None:
    summaries = summarize_game("Qbert", rows(), human=13455.0)
    assert [s.method for s in summaries] == ["ztw", "sdn"]
    ztw, sdn = summaries
    # the expert: 8,000 over 4 games, SE = sample std / 2
    assert ztw.expert_return == 8000.0
    assert ztw.expert_se == pytest.approx(statistics.stdev(EXPERT_GAMES) / 2)
    # ztw 0.1 keeps 88.75 % (out), ztw 0.5 keeps 97.5 % (in) at 55 % of the FLOPs; sdn 0.5 keeps 97.5 % at 60 %
    assert (ztw.cost, ztw.return_at_cost, ztw.episodes) == (0.55, 7800.0, 4)
    assert (sdn.cost, sdn.return_at_cost) == (0.60, 7800.0)
    assert ztw.human == 13455.0


def test_a_method_that_never_keeps_the_return_falls_back_to_the_full_policy() -> None:
    table = [row("ztw", 0.1, 0.4, (1.0, 1.0, 1.0, 1.0)), row("ztw", FULL, 1.0, EXPERT_GAMES)]
    (summary,) = summarize_game("Pong", table)
    assert (summary.cost, summary.return_at_cost) == (1.0, 8000.0)
    with pytest.raises(UserError, match="no full-policy row"):
        summarize_game("Pong", table[:1])


def test_summary_csv_has_the_issue_columns_and_markdown_marks_missing_values(tmp_path: Path) -> None:
    summaries = summarize_game("Phoenix", rows(), human=None)
    path = write_summary_csv(summaries, tmp_path / "summary.csv")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == SUMMARY_COLUMNS
        records = list(reader)
    assert [(r["game"], r["method"], r["human"], r["cheapest_cost_within_5pct"]) for r in records] == [
        ("Phoenix", "ztw", "", "0.5500"), ("Phoenix", "sdn", "", "0.6000")
    ]
    assert "| Phoenix | 8,000.0 ± " in summary_markdown(summaries) and "| – | ZTW | 55.0 % |" in summary_markdown(summaries)


def _plot_figure6(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_figure6.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_draws_every_game_and_summarises_those_with_a_sweep(tmp_path: Path) -> None:
    write_csv(rows(), tmp_path / "agents" / "Qbert" / "sweep.csv")
    out = tmp_path / "out"
    done = _plot_figure6("--agents-dir", str(tmp_path / "agents"), "--games", "Pong", "Qbert",
                         "--methods", "ztw", "--out-dir", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 of 2 games have sweeps" in done.stdout
    with open(out / "summary.csv", newline="") as handle:
        assert [(r["game"], r["method"]) for r in csv.DictReader(handle)] == [("Qbert", "ztw")]
    assert (out / "figure6.png").stat().st_size > 10_000


def test_cli_without_any_sweep_is_a_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    out = tmp_path / "out"
    done = _plot_figure6("--agents-dir", str(tmp_path / "agents"), "--out-dir", str(out))
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "has a sweep.csv" in done.stderr
    assert not out.exists()
