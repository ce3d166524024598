"""FLOPs of stages, heads and ensembles, counted with ``torch.utils.flop_counter.FlopCounterMode``.

Convention (used everywhere in ee_rl): FlopCounterMode counts a multiply-add as 2 FLOPs and counts only matmul-like
ops (conv, linear, mm, bmm, ...); elementwise ops, pooling and (log-)softmax count 0. Costs are measured at batch 1.
A sample answered at internal exit m paid for stages up to the one IC m is attached to, every IC 0..m and their
ensembles. A sample answered by the final head paid for the whole backbone plus every IC and ensemble. Only the
no-early-exit setting (a rule that never exits early, so no head runs) costs exactly the backbone: 100 %.
"Inference time" = mean FLOPs per sample / backbone FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ee_rl.core.backbone import StagedBackbone


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run ``fn(*args, **kwargs)`` without gradients under FlopCounterMode; return ``(flops, output)``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return int(counter.get_total_flops()), out


@dataclass(frozen=True)
class ExitCosts:
    """FLOPs per sample of every part of an early-exit model, and the cumulative cost of answering at each exit.

    Attributes:
        preprocess: the backbone's preprocess module.
        stages: each backbone stage.
        head: the backbone's own output head.
        ics: each internal classifier head (including its cascade input).
        ensembles: each ensemble (zeros when the model has none).
        attach_after: stage index each IC is attached after.
    """

    preprocess: int
    stages: tuple[int, ...]
    head: int
    ics: tuple[int, ...]
    ensembles: tuple[int, ...]
    attach_after: tuple[int, ...]

    @property
    def backbone(self) -> int:
        """FLOPs of the plain backbone: the 100 % reference."""
        return self.preprocess + sum(self.stages) + self.head

    @property
    def cumulative(self) -> tuple[int, ...]:
        """FLOPs of answering at exit ``m`` for ``m = 0..M`` (M = final head, after every IC and ensemble)."""
        costs = []
        for m, s in enumerate(self.attach_after):
            heads = sum(self.ics[: m + 1]) + sum(self.ensembles[: m + 1])
            costs.append(self.preprocess + sum(self.stages[: s + 1]) + heads)
        costs.append(self.backbone + sum(self.ics) + sum(self.ensembles))
        return tuple(costs)

    @property
    def relative(self) -> tuple[float, ...]:
        """:attr:`cumulative` as fractions of the backbone's FLOPs."""
        return tuple(c / self.backbone for c in self.cumulative)

    def per_sample(self, exit_index: torch.Tensor, never_exits_early: bool = False) -> torch.Tensor:
        """FLOPs ``(B,)`` (int64) paid by each sample given its exit index.

        ``never_exits_early=True`` is the no-early-exit setting: no head ran, every sample costs the backbone.
        """
        if never_exits_early:
            return torch.full(exit_index.shape, self.backbone, dtype=torch.long, device=exit_index.device)
        table = torch.tensor(self.cumulative, dtype=torch.long, device=exit_index.device)
        return table[exit_index]


def measure_exit_costs(
    backbone: StagedBackbone,
    heads: Sequence[nn.Module],
    ensembles: Sequence[nn.Module] | None,
    attach_after: Sequence[int],
    sample: torch.Tensor,
) -> ExitCosts:
    """Count FLOPs of each part at batch 1 on the first row of the raw input batch ``sample``.

    ``heads[m]`` is attached after stage ``attach_after[m]``; a head with ``cascade_in > 0`` receives the previous
    head's logits; ``ensembles[m]`` (if given) combines the log-probs of heads ``0..m``.
    """
    if len(heads) != len(attach_after):
        raise ValueError(
            f"got {len(heads)} heads but {len(attach_after)} attach_after entries; give one stage index per head"
        )
    x = sample[:1]
    pre, h = count_flops(backbone.preprocess, x)
    stage_flops, head_flops, ens_flops = [], [], []
    stage_outputs = []
    for stage in backbone.stages:
        f, h = count_flops(stage, h)
        stage_flops.append(f)
        stage_outputs.append(h)
    final, _ = count_flops(backbone.head, h)
    prev_logits = None
    members: list[torch.Tensor] = []
    for m, (head, s) in enumerate(zip(heads, attach_after)):
        cascade = prev_logits if getattr(head, "cascade_in", 0) else None
        f, logits = count_flops(head, stage_outputs[s], cascade)
        head_flops.append(f)
        members.append(torch.log_softmax(logits, dim=-1))
        if ensembles is not None:
            f, _ = count_flops(ensembles[m], members)
            ens_flops.append(f)
        else:
            ens_flops.append(0)
        prev_logits = logits
    return ExitCosts(pre, tuple(stage_flops), final, tuple(head_flops), tuple(ens_flops), tuple(attach_after))
