"""Running a grid: every task submitted at once with its dependencies (expert → exits → sweep settings), results
written by the driver as they come back, then the table across seeds.

An expert training run per game that has no shipped expert, an exit training run per (game, trained method, seed)
that depends on it, and one task per sweep setting that depends on the exits it plays (the full policy's row, once
per game, on the expert only). On Ray the dependencies are Ray's: the eight experts of Figure 6 train at once, and
each seed's sweep starts as soon as its exits exist. Finished cells are read from ``--out`` instead of run again,
and a sweep's finished settings are kept as they come (``sweep.rows.jsonl``), so a stopped grid continues where it
stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from ee_rl.core import FULL
from ee_rl.exec import Executor
from ee_rl.io import RunDirLock, atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ee_rl.rl.games import display_name
from ee_rl.rl.grid.layout import GridLayout
from ee_rl.rl.grid.plan import GridPlan, GridSpec, check_recorded_settings, plan_grid, read_trained
from ee_rl.rl.grid.summary import summary_rows, write_summary
from ee_rl.rl.grid.tasks import Trained, play_cell_setting, train_expert_task, train_exits_task
from ee_rl.rl.policy import NATURE_CNN_ATTACH_AFTER
from ee_rl.rl.stages import trained_method
from ee_rl.rl.sweep import (
    EXPERT,
    PROGRESS_FILE,
    SweepResult,
    SweepRow,
    append_progress_row,
    load_agents,
    read_progress_rows,
    setting_thresholds,
    start_progress,
    write_sweep,
)


def prepare_grid(spec: GridSpec, layout: GridLayout) -> GridPlan:
    """What :func:`run_grid` will do, checked without writing anything: a stage missing its inputs or a ``--out``
    holding another grid is a one-line :class:`~ee_rl.errors.UserError`."""
    plan = plan_grid(spec, layout)
    check_recorded_settings(spec, layout)
    return plan


def run_grid(
    spec: GridSpec, layout: GridLayout, executor: Executor, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Run what is left of the grid on ``executor``, write every result under ``layout.out`` and the summary table;
    return the table's rows (:func:`~ee_rl.rl.grid.summary.summary_rows`).

    Everything that can be wrong is checked (:func:`prepare_grid`) before any task starts.
    """
    plan = prepare_grid(spec, layout)
    ensure_writable_dir(layout.out)
    with RunDirLock(layout.out):  # one live grid per --out
        atomic_write_json(layout.settings_file, check_recorded_settings(spec, layout))
        driver = _Driver(spec, layout, executor)
        driver.submit(plan)
        driver.collect(progress)
        rows = summary_rows(layout, spec.games, spec.methods, spec.seeds)
        write_summary(layout, rows)
    return rows


@dataclasses.dataclass
class _SweepCell:
    """One seed's sweep of a game: the rows it needs, those it has."""

    game: str
    seed: int
    jobs: list[tuple[str, float]]
    rows: dict[tuple[str, float], SweepRow]
    started: float = dataclasses.field(default_factory=time.time)
    written: bool = False


class _Driver:
    """Submits the plan's tasks and writes what each hands back."""

    def __init__(self, spec: GridSpec, layout: GridLayout, executor: Executor) -> None:
        self.spec, self.layout, self.executor = spec, layout, executor
        self.writers: dict[Any, tuple[str, Callable[[Any], None]]] = {}
        self.cells: list[_SweepCell] = []

    # --- submitting -----------------------------------------------------------------------------------------

    def submit(self, plan: GridPlan) -> None:
        experts = {game: self._expert(game, path) for game, path in plan.experts.items()}
        heads = {}
        for game, method, seed in plan.exits:
            heads[(game, method, seed)] = self._train_exits(game, method, seed, experts[game])
        expert_rows: dict[str, Any] = {}
        for game, seed in plan.sweeps:
            self._sweep(game, seed, experts[game], heads, expert_rows)

    def _task(self, what: str, write: Callable[[Any], None], fn: Callable[..., Any], *args: Any, cpus: int) -> Any:
        handle = self.executor.submit(fn, *args, cpus=cpus, name=what)
        self.writers[handle] = (what, write)
        return handle

    def _expert(self, game: str, path: Any) -> Any:
        if path is not None:
            return self.executor.put(path.read_bytes())
        spec = self.spec
        sweep = spec.settings[game].sweep
        return self._task(
            f"expert {display_name(game)}", lambda trained: self._write_expert(game, trained), train_expert_task,
            game, spec.expert_seed, spec.settings[game].expert, str(self.layout.expert_run(game)),
            spec.expert_eval_episodes, sweep.max_episode_frames, spec.expert_threads, spec.ale_threads,
            cpus=max(spec.expert_threads, spec.ale_threads),
        )

    def _train_exits(self, game: str, method: str, seed: int, expert: Any) -> Any:
        spec = self.spec
        return self._task(
            f"exits {display_name(game)} {method} s{seed}", lambda trained: self._write_exits(game, method, seed, trained),
            train_exits_task, expert, game, method, seed, spec.settings[game].exits,
            str(self.layout.exits_run(game, method, seed)), spec.threads, spec.ale_threads,
            cpus=max(spec.threads, spec.ale_threads),
        )

    def _heads(self, game: str, method: str, seed: int, submitted: dict[tuple[str, str, int], Any]) -> Any:
        key = (game, trained_method(method), seed)
        if key not in submitted:  # trained by an earlier run of the grid
            layout = self.layout
            submitted[key] = self.executor.put(read_trained(layout.heads(*key), layout.exits_summary(*key)))
        return submitted[key]

    def _sweep(self, game: str, seed: int, expert: Any, heads: dict, expert_rows: dict[str, Any]) -> None:
        settings = self.spec.sweep_settings(game)
        play = settings.play()
        folder = self.layout.seed_dir(game, seed)
        ensure_writable_dir(folder)
        start_progress(folder, game, settings)
        done = {(r.method, r.threshold): r for r in read_progress_rows(folder, game, settings)}
        jobs = [(m, t) for m in settings.methods
                for t in setting_thresholds(m, settings, len(NATURE_CNN_ATTACH_AFTER))[:-1]]
        cell = _SweepCell(game, seed, jobs, {job: row for job, row in done.items() if job in jobs})
        self.cells.append(cell)
        row_file = self.layout.expert_row(game)
        if row_file.is_file():
            cell.rows[(EXPERT, FULL)] = SweepRow.from_dict(json.loads(row_file.read_text()))
        elif game not in expert_rows:
            expert_rows[game] = self._task(
                f"sweep {display_name(game)} expert", lambda row: self._write_expert_row(game, row),
                play_cell_setting, expert, None, EXPERT, FULL, game, play, cpus=play.cpus,
            )
        for method, threshold in jobs:
            if (method, threshold) in cell.rows:
                continue
            self._task(
                f"sweep {display_name(game)} s{seed} {method} {threshold:g}",
                lambda row, cell=cell: self._add_row(cell, row), play_cell_setting, expert,
                self._heads(game, method, seed, heads), method, threshold, game, play, cpus=play.cpus,
            )

    # --- collecting -----------------------------------------------------------------------------------------

    def collect(self, progress: bool) -> None:
        bar = tqdm(total=len(self.writers), desc="grid", unit="task", disable=not progress, dynamic_ncols=True)
        with bar:
            for handle, value in self.executor.as_completed(list(self.writers)):
                what, write = self.writers[handle]
                write(value)
                self._finish_cells()
                bar.set_postfix_str(what)
                bar.update()
                if isinstance(value, Trained):
                    bar.write(f"{what}: done" + self._resumed(value))
        self._finish_cells()

    @staticmethod
    def _resumed(trained: Trained) -> str:
        steps = trained.summary.get("resumed_from_timesteps")
        return f" (resumed from its checkpoint at {steps:,} steps)" if steps else ""

    def _write_expert(self, game: str, trained: Trained) -> None:
        atomic_write_json(self.layout.expert_eval(game), trained.summary)
        atomic_write_bytes(self.layout.trained_expert(game), trained.data)  # last: the cell's mark of completion

    def _write_exits(self, game: str, method: str, seed: int, trained: Trained) -> None:
        layout = self.layout
        atomic_write_bytes(layout.heads(game, method, seed), trained.data)
        summary = {**trained.summary, "heads": str(layout.heads(game, method, seed))}
        atomic_write_json(layout.exits_summary(game, method, seed), summary)  # last: the cell's mark of completion

    def _write_expert_row(self, game: str, row: SweepRow) -> None:
        atomic_write_json(self.layout.expert_row(game), row.to_dict())
        for cell in self.cells:
            if cell.game == game:
                cell.rows[(EXPERT, FULL)] = row

    def _add_row(self, cell: _SweepCell, row: SweepRow) -> None:
        cell.rows[(row.method, row.threshold)] = row
        append_progress_row(self.layout.seed_dir(cell.game, cell.seed), row)

    def _finish_cells(self) -> None:
        """Write the sweep of every cell that has all its rows and whose agent's files are written."""
        for cell in self.cells:
            if cell.written or any(job not in cell.rows for job in [(EXPERT, FULL), *cell.jobs]):
                continue
            expert = self.layout.expert(cell.game)
            folder = self.layout.seed_dir(cell.game, cell.seed)
            needed = [self.layout.heads(cell.game, trained_method(m), cell.seed) for m in self.spec.methods]
            if expert is None or not all(p.is_file() for p in needed):
                continue
            write_sweep(self._result(cell, expert.parent), folder)
            (folder / PROGRESS_FILE).unlink(missing_ok=True)
            cell.written = True

    def _result(self, cell: _SweepCell, agent_dir: Any) -> SweepResult:
        settings = self.spec.sweep_settings(cell.game)
        folder = self.layout.seed_dir(cell.game, cell.seed)
        policies = load_agents(agent_dir, settings.methods, cell.game, folder)
        expert = cell.rows[(EXPERT, FULL)]
        rows = []
        for method in settings.methods:
            rows += [cell.rows[job] for job in cell.jobs if job[0] == method]
            rows.append(expert.with_method(method))
        first = next(iter(policies.values()))
        return SweepResult(
            game=cell.game, settings=settings, rows=tuple(rows), expert=expert,
            backbone_flops=first.exit_costs.backbone,
            exit_costs={m: policies[m].exit_costs.relative for m in settings.methods},
            torch_threads=settings.torch_threads, wall_time_s=time.time() - cell.started,
        )
