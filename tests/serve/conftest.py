"""Fixtures for the serving tests: a tiny early-exit model whose items split between IC 1 and the final head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ee_rl.core import PerExitThresholds
from ee_rl.serve import InputSpec, ServedModel
from tests.core.builders import INPUT_SHAPE, make_tiny_model, random_images

#: Items per test batch.
N_ITEMS = 16


def tiny_inputs(n: int = N_ITEMS, seed: int = 4) -> np.ndarray:
    """``n`` float32 inputs for the tiny model, as a wire batch."""
    return random_images(n, seed=seed).numpy().astype(np.float32)


def make_tiny_served(**info: object) -> ServedModel:
    """The tiny core model (3 ICs) with a rule that lets about half of :func:`tiny_inputs` out at IC 1 (exit 0)
    and sends the rest to the backbone's head (exit 3): later ICs run but never answer (threshold 2)."""
    model = make_tiny_model()
    with torch.no_grad():
        conf = model.all_exits(torch.from_numpy(tiny_inputs())).exit_log_probs[0].exp().amax(dim=-1)
    rule = PerExitThresholds([conf.median().item() + 1e-4, 2.0, 2.0])
    return ServedModel("tiny", model, InputSpec(INPUT_SHAPE, "float32"), rule, label_name="class", info=dict(info))


@pytest.fixture(scope="session")
def tiny_served() -> ServedModel:
    """The tiny served model (shared: tests must not change it)."""
    return make_tiny_served()


@pytest.fixture(scope="session")
def tiny_expected(tiny_served: ServedModel) -> dict[str, np.ndarray]:
    """Offline answers of the tiny model for :func:`tiny_inputs`; checks the exits really are mixed."""
    expected = tiny_served.offline_answers(tiny_inputs())
    exits = set(expected["exit_index"].tolist())
    assert exits == {0, 3}, f"tiny inputs should exit at IC 1 and at the final head, got exits {exits}"
    return expected
