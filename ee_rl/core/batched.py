"""All-exits outputs of a whole input set, computed in memory-bounded chunks.

Calibration (SelfXit temperatures and thresholds) and serving's tolerance rule both need every exit's outputs on
more inputs than fit in one forward pass; chunking keeps the activations of only ``batch_size`` inputs alive.
"""

from __future__ import annotations

import torch

from ee_rl.core.model import AllExits, EarlyExitModel, concat_all_exits


@torch.no_grad()
def all_exits_batched(model: EarlyExitModel, inputs: torch.Tensor, batch_size: int = 256) -> AllExits:
    """:meth:`EarlyExitModel.all_exits` over ``inputs`` in chunks, concatenated along the samples."""
    return concat_all_exits(
        [model.all_exits(inputs[s : s + batch_size]) for s in range(0, inputs.shape[0], batch_size)]
    )
