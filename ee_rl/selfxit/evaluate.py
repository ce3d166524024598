"""Evaluation of a deployed SelfXit model on held-out data: accuracy (when labels exist), agreement with the
backbone, inference time (FLOPs) and wall-clock time, all from the core's batch-shrinking ``infer``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ee_rl.core.exits import MaxProbExit
from ee_rl.core.runtime import make_runner
from ee_rl.selfxit.latency import timed_ms
from ee_rl.selfxit.pipeline import Calibration

#: The plain backbone through ``infer``: no head runs (thresholds above 1).
NO_EXIT = MaxProbExit(2.0)


@dataclass(frozen=True)
class HeldOutResult:
    """The deployed model on held-out samples.

    Attributes:
        samples: N.
        agreement: fraction answered with the backbone's argmax.
        inference_time: mean FLOPs per sample / the backbone's (core convention; 1.0 = the backbone).
        exit_rates: fraction answered at each deployed exit, the backbone's head last.
        backbone_ms / early_exit_ms: wall-clock time for the whole split in batches of ``batch_size`` (median of
            interleaved repeats): the plain backbone vs the deployed model.
        backbone_cpu_ms / early_exit_cpu_ms: the same by the thread's CPU time (one torch thread on a CPU; else
            None): robust to preemption on a loaded machine.
        batch_size: the batch size of those timings.
        backbone_accuracy / accuracy / accuracy_drop: against labels, when given (else None).
    """

    samples: int
    agreement: float
    inference_time: float
    exit_rates: tuple[float, ...]
    backbone_ms: float
    early_exit_ms: float
    backbone_cpu_ms: float | None
    early_exit_cpu_ms: float | None
    batch_size: int
    backbone_accuracy: float | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None


def evaluate_held_out(
    calibration: Calibration,
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
    repeats: int = 20,
    runtime: str = "torch",
) -> HeldOutResult:
    """Run the deployed model and the plain backbone on ``inputs`` (in batches of ``batch_size``) and compare.

    ``labels`` are read only here, to score accuracy; the calibration never saw them. ``runtime`` runs the deployed
    model's conditional inference (and the timed plain backbone) in eager torch or in ONNX Runtime (segments
    exported into the user's cache, as many threads as torch has).
    """
    model, rule = calibration.deployed, calibration.rule
    runner = make_runner(model, runtime, sample=inputs[:1], threads=torch.get_num_threads())
    n = inputs.shape[0]
    if n == 0 or (labels is not None and labels.shape != (n,)):
        raise ValueError(f"need N >= 1 inputs and labels of shape (N,), got {n} and "
                         f"{None if labels is None else tuple(labels.shape)}")
    chunks = [inputs[s : s + batch_size] for s in range(0, n, batch_size)]
    with torch.inference_mode():
        outs = [runner.infer(x, rule) for x in chunks]
        backbone_pred = torch.cat([model.backbone(x).argmax(dim=-1) for x in chunks])
    pred = torch.cat([o.log_probs.argmax(dim=-1) for o in outs])
    exit_index = torch.cat([o.exit_index for o in outs])
    flops = int(sum(int(o.flops.sum()) for o in outs))
    counts = torch.bincount(exit_index, minlength=model.num_ics + 1).double() / n

    def run_backbone() -> None:
        with torch.inference_mode():
            for x in chunks:
                runner.infer(x, NO_EXIT)

    def run_early_exit() -> None:
        with torch.inference_mode():
            for x in chunks:
                runner.infer(x, rule)

    wall, cpu = timed_ms({"backbone": run_backbone, "early_exit": run_early_exit}, repeats, 2, inputs.device)
    result = dict(
        samples=n,
        agreement=float((pred == backbone_pred).double().mean()),
        inference_time=flops / (n * calibration.backbone_flops),
        exit_rates=tuple(counts.tolist()),
        backbone_ms=wall["backbone"],
        early_exit_ms=wall["early_exit"],
        backbone_cpu_ms=cpu["backbone"] if cpu else None,
        early_exit_cpu_ms=cpu["early_exit"] if cpu else None,
        batch_size=batch_size,
    )
    if labels is not None:
        backbone_accuracy = float((backbone_pred == labels).double().mean())
        accuracy = float((pred == labels).double().mean())
        result.update(
            backbone_accuracy=backbone_accuracy, accuracy=accuracy, accuracy_drop=backbone_accuracy - accuracy
        )
    return HeldOutResult(**result)
