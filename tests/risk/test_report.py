"""The risk check's files: rows in summary.json, the Markdown table and the plot."""

from __future__ import annotations

import json

from ee_rl.risk.experiment import run_risk_check, summarize
from ee_rl.risk.report import OUTPUT_FILES, render_table, write_outputs
from tests.risk.test_experiment import small_settings, synthetic_record


def test_outputs_hold_the_rows_and_a_table_line_per_row(tmp_path) -> None:
    settings = small_settings(methods=("point-estimate", "shared-ucb"), n_splits=2)
    rows = summarize(run_risk_check(synthetic_record(), settings), settings)
    paths = write_outputs(rows, {"dataset": "synthetic"}, tmp_path, "synthetic")
    assert [p.name for p in paths] == list(OUTPUT_FILES)
    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    assert (tmp_path / "cost_vs_epsilon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = render_table(rows)
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(body) == len(rows)
    assert "| SelfXit point estimate | 10 |" in table and "**accuracy-gap** risk" in table


def test_table_drops_the_population_column_when_the_test_split_is_all_non_calibration_data() -> None:
    settings = small_settings(methods=("shared-ucb",), n_splits=2, n_test=None)
    table = render_table(summarize(run_risk_check(synthetic_record(), settings), settings))
    assert "vs. all non-cal. data" not in table and "test = all non-calibration samples" in table
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    row = next(line for line in table.splitlines() if line.startswith("| shared"))
    assert header.count("|") == row.count("|") == 8
