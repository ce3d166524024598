"""ee_rl.rl.compare and ee_rl.rl.figures on hand-made sweep rows: SEs, relative tolerance, paired differences."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from ee_rl.errors import UserError
from ee_rl.rl.compare import (
    cheapest_within_fraction,
    comparison_section,
    format_paired_table,
    paired_at_matched_cost,
    return_se,
)
from ee_rl.rl.figures import GamePanel, plot_return_vs_cost
from ee_rl.rl.sweep import FULL, RETURNS_ORDER, SweepRow, read_json

EXPERT_GAMES = (8000.0, 6000.0, 10000.0, 8000.0)


def row(method: str, threshold: float, cost: float, returns: tuple[float, ...]) -> SweepRow:
    n = len(returns)
    mean = sum(returns) / n
    return SweepRow(
        method=method, threshold=threshold, rule=f"{method}>{threshold}", episodes=n, return_mean=mean,
        return_std=statistics.pstdev(returns), return_min=min(returns), return_max=max(returns),
        inference_time=cost, agreement=1.0, us_per_decision=1.0, decisions=100, exit_rates=(0.5, 0.5),
        returns=returns,
    )


def rows() -> list[SweepRow]:
    return [
        row("ztw", 0.1, 0.40, (7000.0, 5000.0, 9000.0, 7400.0)),  # 7100: 88.75 % of the expert
        row("ztw", 0.5, 0.55, (7900.0, 5900.0, 9800.0, 7600.0)),  # 7800: 97.5 %
        row("ztw", FULL, 1.0, EXPERT_GAMES),
        row("sdn", 0.1, 0.42, (6000.0, 4000.0, 8000.0, 6000.0)),
        row("sdn", 0.5, 0.60, (7800.0, 5800.0, 9700.0, 7900.0)),  # 7800 as well, but costs more
        row("sdn", FULL, 1.0, EXPERT_GAMES),
    ]


def test_return_se_uses_the_games_or_else_the_population_std() -> None:
    r = rows()[0]
    assert return_se(r) == pytest.approx(statistics.stdev(r.returns) / 2)
    from_csv = SweepRow(**{**r.__dict__, "returns": ()})  # a CSV row: no per-game returns
    assert return_se(from_csv) == pytest.approx(return_se(r))


def test_cheapest_within_a_fraction_of_the_expert() -> None:
    chosen = cheapest_within_fraction(rows(), 0.05)  # expert 8000: at least 7600
    assert chosen["ztw"].threshold == 0.5 and chosen["sdn"].threshold == 0.5
    loose = cheapest_within_fraction(rows(), 0.12)  # at least 7040: ZTW's τ = 0.1 qualifies, SDN's does not
    assert loose["ztw"].threshold == 0.1 and loose["sdn"].threshold == 0.5
    with pytest.raises(UserError, match=r"fraction in \[0, 1\)"):
        cheapest_within_fraction(rows(), 5)


def test_paired_differences_match_settings_by_cost_and_difference_game_by_game() -> None:
    comparisons = paired_at_matched_cost(rows(), "ztw", "sdn")
    assert [(c.a.threshold, c.b.threshold) for c in comparisons] == [(0.1, 0.1), (0.5, 0.5)]
    first = comparisons[0]
    assert first.diff_mean == pytest.approx(1100.0)  # per game: 1000, 1000, 1000, 1400
    assert first.diff_se == pytest.approx(statistics.stdev([1000, 1000, 1000, 1400]) / 2)
    assert first.cost_gap == pytest.approx(-0.02)
    table = format_paired_table(comparisons)
    assert "| ztw>0.1 | 40.0 % | 7100.0 ± " in table and "+1100.0 ± 100.0 | 4 |" in table


def test_paired_differences_need_per_game_returns() -> None:
    without = [SweepRow(**{**r.__dict__, "returns": ()}) for r in rows()]
    with pytest.raises(UserError, match="per-game returns"):
        paired_at_matched_cost(without)
    with pytest.raises(UserError, match="'pbee'"):
        paired_at_matched_cost(rows(), "ztw", "pbee")


def test_sweep_json_round_trip_keeps_the_full_row_and_returns(tmp_path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"game": "qbert", "returns_order": RETURNS_ORDER, "rows": [r.to_dict() for r in rows()]}))
    again = read_json(path)
    assert again == rows() and again[2].is_full and math.isinf(again[2].threshold)
    (tmp_path / "bad.json").write_text('{"rows": [{"method": "ztw"}]}')
    with pytest.raises(UserError, match="not a sweep.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        read_json(tmp_path / "missing.json")


def test_an_older_sweep_json_with_returns_in_finishing_order_cannot_be_paired(tmp_path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"game": "qbert", "rows": [r.to_dict() for r in rows()]}))  # no returns_order
    old = read_json(path)
    assert all(r.returns == () for r in old)
    assert return_se(old[0]) == pytest.approx(return_se(rows()[0]))  # the SE still comes from the std
    with pytest.raises(UserError, match="game-slot order"):
        paired_at_matched_cost(old)


def test_figure_has_one_panel_per_game_in_a_grid(tmp_path) -> None:
    import matplotlib.image

    panels = [GamePanel("Qbert", rows(), human=13455.0), GamePanel("Pong", rows()), GamePanel("Seaquest", rows())]
    path = plot_return_vs_cost(panels, tmp_path / "figure.png", columns=2)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == (round(2 * 5.2 * 120), round(2 * 3.9 * 120))  # 2 columns x 2 rows of panels
    with pytest.raises(ValueError, match="no game"):
        plot_return_vs_cost([], tmp_path / "empty.png")


def test_comparison_section_names_each_methods_cheapest_setting_and_the_paired_table() -> None:
    text = comparison_section(rows(), fraction=0.05, command="python scripts/compare_methods.py")
    assert "≥ 95 % of the expert's (8000.0 on these games)" in text
    assert "- **ztw**: ztw>0.5 — 55.0 % of the expert's FLOPs, return 7800.0 ± " in text
    assert "- **sdn**: sdn>0.5 — 60.0 % of the expert's FLOPs" in text
    assert text.count("| ztw>") == 2  # one paired line per early-exit ZTW setting
