"""Vision seeds as executor tasks: two tiny digits-noisy seeds trained on each executor give the files a training in
this process gives, and the driver writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ee_rl.core.method import SDN, ZTW
from ee_rl.vision.config import load_vision_config
from ee_rl.vision.tasks import train_seeds
from ee_rl.vision.train import RunSpec, train_run

SEEDS = (0, 1)
OVERRIDES = ["backbone.epochs=1", "ics.epochs=1", "ensembles.epochs=3", "eval_every=0", "backbone.batch_size=16"]


def specs(runs: Path) -> list[RunSpec]:
    config = load_vision_config(None, "digits-noisy", "small_cnn", OVERRIDES)
    return [RunSpec(dataset="digits-noisy", arch="small_cnn", out_dir=runs / f"s{seed}", config=config, seed=seed,
                    variants=(ZTW, SDN), resume=True, progress=False) for seed in SEEDS]


def weights(run_dir: Path) -> dict[str, bytes]:
    """The run's backbone and exit heads, as bytes."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.glob("*.pt"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("serial")
    for spec in specs(runs):
        train_run(spec)
    return runs


def test_every_executor_trains_the_seeds_a_plain_training_run_trains(reference, executor, tmp_path):
    runs = tmp_path / executor.name
    finished = [spec.seed for spec, _ in train_seeds(specs(runs), executor, threads=1)]
    assert sorted(finished) == list(SEEDS)
    for seed in SEEDS:
        mine = weights(runs / f"s{seed}")
        assert set(mine) == {"backbone.pt", "exits-ztw.pt", "exits-sdn.pt"}
        assert mine == weights(reference / f"s{seed}")
        assert (runs / f"s{seed}" / "train_summary.json").is_file()
