"""Grids of games × methods × seeds: expert training where none is shipped, exit training per (game, method, seed),
the sweeps that depend on it, and a table across seeds, as tasks of any executor (serial, process, Ray).

Modules, by job: :mod:`~ee_rl.rl.grid.layout` (where the files are), :mod:`~ee_rl.rl.grid.plan` (what the grid is,
what is left to do), :mod:`~ee_rl.rl.grid.tasks` (the tasks), :mod:`~ee_rl.rl.grid.run` (submitting them and writing
their results) and :mod:`~ee_rl.rl.grid.summary` (the table). The stages are :mod:`ee_rl.rl.stages`', shared with a
game's pipeline (``scripts/reproduce.py``).
"""

from ee_rl.rl.grid.layout import GridLayout
from ee_rl.rl.grid.plan import GridPlan, GridSpec, plan_grid
from ee_rl.rl.grid.run import prepare_grid, run_grid
from ee_rl.rl.grid.summary import format_summary, summary_rows, write_summary
from ee_rl.rl.grid.tasks import Trained, play_cell_setting, train_expert_task, train_exits_task

__all__ = [
    "GridLayout",
    "GridPlan",
    "GridSpec",
    "Trained",
    "format_summary",
    "plan_grid",
    "play_cell_setting",
    "prepare_grid",
    "run_grid",
    "summary_rows",
    "train_expert_task",
    "train_exits_task",
    "write_summary",
]
