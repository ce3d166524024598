"""Threshold-vs-return sweeps of early-exit agents on full Atari games, budget selection, and their CSV/JSON/plot.

For each method (``ztw``, ``sdn``, ``pbee``) and threshold (patience for PBEE), the agent plays full games
(evaluation mode: no life-loss terminals, raw scores, sticky actions) in parallel envs, every decision answered by
batch-shrinking inference (:meth:`ee_rl.rl.policy.EarlyExitPolicy.act`). Per setting it reports the return, the
*inference time* (mean FLOPs per decision as a fraction of the expert's, from the exits really taken, counted by
:mod:`ee_rl.core.flops`: a decision answered by the final exit paid the backbone plus every IC it passed), the exit
rate of every exit, the agreement with the expert's argmax action on the same states, and measured µs per decision.

The *full policy* (threshold ``inf``: no head runs) is the expert itself and costs exactly 1.0. It is played once
and reported as every method's ``inf`` row. Every setting plays the same env seeds, so the same seeds give the same
numbers (except the µs).

Modules, by job: :mod:`~ee_rl.rl.sweep.settings` (what to sweep), :mod:`~ee_rl.rl.sweep.rows` (what is measured),
:mod:`~ee_rl.rl.sweep.play` (playing games under one rule and tallying decisions), :mod:`~ee_rl.rl.sweep.agents`
(loading the agents), :mod:`~ee_rl.rl.sweep.tasks` (settings as executor tasks), :mod:`~ee_rl.rl.sweep.run`
(the whole sweep), :mod:`~ee_rl.rl.sweep.selection` (budget selection) and :mod:`~ee_rl.rl.sweep.output` (CSV, JSON,
PNG and terminal table). Which rule a method uses at a threshold is the core's
(:func:`ee_rl.core.rule_for_method`). This package re-exports the public names of all of them.
"""

from ee_rl.core import FULL, FULL_RULE
from ee_rl.rl.sweep.agents import EXPERT, check_agent_files, load_agents, player_for
from ee_rl.rl.sweep.output import (
    CSV_COLUMNS,
    PROGRESS_FILE,
    append_progress_row,
    csv_columns,
    default_out_dir,
    format_table,
    plot_sweep,
    read_csv,
    read_json,
    read_progress_rows,
    start_progress,
    write_csv,
    write_json,
    write_sweep,
)
from ee_rl.rl.sweep.play import DecisionTally, evaluate_setting, expert_actions_for, games_row, play_games
from ee_rl.rl.sweep.rows import RETURNS_ORDER, SweepResult, SweepRow, rows_by_method
from ee_rl.rl.sweep.run import run_sweep
from ee_rl.rl.sweep.selection import (
    expert_return,
    format_selection,
    select_by_budget,
    select_by_max_drop,
    selection_summary,
)
from ee_rl.rl.sweep.settings import (
    DEFAULT_CONFIG,
    PlaySettings,
    SweepSettings,
    load_sweep_settings,
    rule_label,
    setting_thresholds,
)
from ee_rl.rl.sweep.tasks import AgentBytes, Job, load_player, play_setting, play_settings

__all__ = [
    "AgentBytes",
    "CSV_COLUMNS",
    "DEFAULT_CONFIG",
    "EXPERT",
    "FULL",
    "FULL_RULE",
    "RETURNS_ORDER",
    "DecisionTally",
    "Job",
    "PlaySettings",
    "SweepResult",
    "SweepRow",
    "SweepSettings",
    "check_agent_files",
    "csv_columns",
    "default_out_dir",
    "evaluate_setting",
    "expert_actions_for",
    "expert_return",
    "format_selection",
    "format_table",
    "games_row",
    "load_agents",
    "load_player",
    "load_sweep_settings",
    "play_games",
    "play_setting",
    "play_settings",
    "player_for",
    "plot_sweep",
    "PROGRESS_FILE",
    "append_progress_row",
    "read_csv",
    "read_json",
    "read_progress_rows",
    "start_progress",
    "rows_by_method",
    "rule_label",
    "run_sweep",
    "select_by_budget",
    "select_by_max_drop",
    "selection_summary",
    "setting_thresholds",
    "write_csv",
    "write_json",
    "write_sweep",
]
