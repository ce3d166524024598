"""all_exits_batched (ee_rl.core.batched): chunked all-exits outputs equal one pass over the whole input."""

from __future__ import annotations

import pytest
import torch

from ee_rl.core import all_exits_batched
from tests.core.builders import make_tiny_model, random_images


@pytest.mark.parametrize("batch_size", [1, 3, 7, 256])
def test_chunks_concatenate_to_the_outputs_of_one_pass(batch_size: int) -> None:
    model = make_tiny_model().eval()
    x = random_images(7, seed=2)
    with torch.no_grad():
        whole = model.all_exits(x)
    got = all_exits_batched(model, x, batch_size=batch_size)
    assert not got.final_logits.requires_grad  # computed without an autograd graph (calibration only reads it)
    for name in ("ic_logits", "ic_log_probs", "ensemble_log_probs", "final_logits", "final_log_probs"):
        torch.testing.assert_close(getattr(got, name), getattr(whole, name), msg=name)
    assert got.final_logits.shape[0] == 7 and got.num_ics == whole.num_ics
