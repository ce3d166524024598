"""Every exit's raw output on a pool of samples, computed once and cached, so that hundreds of calibration / test
splits of it cost no forward pass.

Pools:

* ``digits-noisy``: the ``resnet20_w8`` backbone of split seed 0 (trained with the vision recipe on its 359 images,
  as ``scripts/selfxit.py`` does), SelfXit heads trained label-free on 360 of the 719 images that split leaves out;
  the pool is the other 359 left-out images plus the 719 test images (1078 labelled images neither the backbone nor
  the heads saw).
* ``Pong``: states the shipped expert meets while playing (every 4th decision, 8 envs, sticky actions, the seeds of
  SelfXit's Pong run), through the agent's SDN heads (independent ICs distilled from the expert; no labels).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ee_rl.core.batched import all_exits_batched
from ee_rl.core.flops import ExitCosts
from ee_rl.core.model import AllExits, EarlyExitModel
from ee_rl.errors import UserError
from ee_rl.io import atomic_path

#: Datasets the risk check knows.
POOLS = ("digits-noisy", "Pong")
#: digits-noisy: left-out images that train the heads (the rest join the pool); SelfXit's own digits run trains
#: its heads on 360 images too.
DIGITS_HEAD_IMAGES = 360


@dataclass
class ExitRecord:
    """Raw outputs of every exit on a pool of samples.

    Attributes:
        name: the pool (one of :data:`POOLS`).
        ic_logits: ``(M, N, K)`` each internal exit's logits (no temperature).
        final_logits: ``(N, K)`` the backbone's.
        labels: ``(N,)`` ground truth, or None (RL).
        costs: FLOPs of every part of the early-exit model.
        info: how the pool was made (JSON-ready; ``record_seconds``: how long the recording took).
    """

    name: str
    ic_logits: torch.Tensor
    final_logits: torch.Tensor
    labels: torch.Tensor | None
    costs: ExitCosts
    info: dict[str, Any]

    @property
    def num_samples(self) -> int:
        """N, the pool size."""
        return self.final_logits.shape[0]

    def outputs(self) -> AllExits:
        """The pool as an all-exits pass."""
        return AllExits(self.ic_logits, torch.log_softmax(self.ic_logits, dim=-1), None, self.final_logits,
                        torch.log_softmax(self.final_logits, dim=-1))

    def save(self, path: str | Path) -> Path:
        """Write the record atomically (plain tensors and Python values: loads with ``weights_only=True``)."""
        payload = {
            "name": self.name, "ic_logits": self.ic_logits, "final_logits": self.final_logits,
            "labels": self.labels, "costs": dataclasses.asdict(self.costs), "info": self.info,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ExitRecord:
        """Read a record written by :meth:`save`."""
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            costs = ExitCosts(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["costs"].items()})
            return cls(d["name"], d["ic_logits"], d["final_logits"], d["labels"], costs, d["info"])
        except Exception as exc:  # torch raises many types for broken, foreign or unsafe files
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot read the exit record {path}: {first_line} (--recompute records it again)") from None


def _record(name: str, model: EarlyExitModel, inputs: torch.Tensor, labels: torch.Tensor | None,
            info: dict[str, Any], batch_size: int, started: float) -> ExitRecord:
    outputs = all_exits_batched(model.eval(), inputs, batch_size)
    info = {**info, "record_seconds": round(time.perf_counter() - started, 1)}
    return ExitRecord(name, outputs.ic_logits, outputs.final_logits, labels, model.exit_costs(inputs[:1]), info)


def digits_pool_size(seed: int = 0) -> int:
    """How many images the digits-noisy pool of split ``seed`` holds (without recording it)."""
    from ee_rl.vision.data import digits_noisy_left_out, load_dataset

    return len(digits_noisy_left_out(seed).labels) - DIGITS_HEAD_IMAGES + len(load_dataset("digits-noisy",
                                                                                            seed=seed).test.labels)


def record_digits_noisy(settings: Any, *, backbone_path: Path | None = None, progress: bool = False) -> ExitRecord:
    """The digits-noisy pool (see the module doc) with SelfXit's head search of ``settings``
    (:class:`~ee_rl.selfxit.settings.SelfXitSettings`); the backbone is trained first when ``backbone_path`` is
    None (or reused from ``runs/selfxit/``)."""
    from ee_rl.selfxit.pipeline import split_indices, train_heads
    from ee_rl.selfxit.vision import prepare_backbone, split_tensors
    from ee_rl.vision.data import digits_noisy_left_out, load_dataset

    started = time.perf_counter()
    dataset, arch, seed = "digits-noisy", "resnet20_w8", settings.seed
    net, record = prepare_backbone(dataset, arch, backbone_path=backbone_path, seed=seed, progress=progress)
    net.eval()
    left_images, left_labels = split_tensors(digits_noisy_left_out(seed), settings.batch_size)
    heads_part, pool_part = split_indices(
        len(left_labels), [DIGITS_HEAD_IMAGES / len(left_labels), 1 - DIGITS_HEAD_IMAGES / len(left_labels)], seed
    )
    # SelfXit's 50 / 20 of the heads' share: train the heads on 5/7 of it, score the head search on 2/7.
    head_train, head_val = split_indices(len(heads_part), [5 / 7, 2 / 7], seed)
    backbone = net.frozen()
    candidates = tuple(net.placement.attach_after)
    images = left_images[heads_part]
    heads = train_heads(backbone, images[head_train], images[head_val], candidates, settings)
    test_images, test_labels = split_tensors(load_dataset(dataset, seed=seed).test, settings.batch_size)
    pool = torch.cat([left_images[pool_part], test_images])
    labels = torch.cat([left_labels[pool_part], test_labels])
    info = {
        "pool": f"{len(pool_part)} left-out digits-noisy images + {len(test_labels)} test images (split seed {seed})",
        "backbone": {"arch": arch, "sha256": record.get("sha256"), "seed": record.get("seed"),
                     "accuracy_on_test_split": record.get("test_accuracy")},
        "heads": [t.spec.describe() for t in heads.chosen],
        "head_images": {"train": len(head_train), "search_validation": len(head_val)},
        "search_trials": settings.search_trials,
    }
    model = EarlyExitModel(backbone, heads.heads, None, candidates)
    return _record(dataset, model, pool, labels, info, settings.batch_size, started)


def record_pong(agent_dir: Path, num_states: int, settings: Any) -> ExitRecord:
    """``num_states`` expert states of Pong through the agent's SDN heads (``settings``: a
    :class:`~ee_rl.selfxit.settings.SelfXitSettings` for the envs)."""
    from ee_rl.rl.games import rom_id
    from ee_rl.rl.policy import agent_paths, load_early_exit_agent
    from ee_rl.selfxit.rl import STATES_SEED_OFFSET, collect_expert_states

    started = time.perf_counter()
    paths = agent_paths(agent_dir, "sdn")
    for path in (paths.expert, paths.heads):
        if not path.is_file():
            raise UserError(f"agent file not found: {path} (the risk check uses the expert and its SDN heads)")
    game = rom_id("Pong")
    policy = load_early_exit_agent(paths.expert, paths.heads, game=game)
    seed = settings.env_seed + STATES_SEED_OFFSET
    states = torch.from_numpy(collect_expert_states(
        policy, game, num_states, n_envs=settings.n_envs, stride=settings.state_stride,
        sticky_prob=settings.sticky_prob, seed=seed,
    ))
    info = {
        "pool": f"{num_states} states the expert meets in Pong (every {settings.state_stride}th decision of "
        f"{settings.n_envs} envs, sticky actions {settings.sticky_prob}, env seed {seed})",
        "agent": str(agent_dir),
        "heads": str(paths.heads),
    }
    return _record("Pong", policy.model, states, None, info, settings.batch_size, started)
