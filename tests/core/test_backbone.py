"""The staged backbone is frozen: no gradients, eval mode forever, weights and BatchNorm statistics unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ee_rl.core import StagedBackbone, UInt8ToUnitFloat
from tests.core.builders import NUM_CLASSES, make_tiny_backbone, make_tiny_model, random_images


def test_backbone_is_frozen_and_stays_in_eval_mode() -> None:
    model = make_tiny_model()
    model.train()
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules())
    assert all(m.training for m in model.heads.modules())


def test_backbone_forward_is_stages_then_head() -> None:
    bb = make_tiny_backbone()
    x = random_images(3)
    h = x
    for stage in bb.stages:
        h = stage(h)
    assert torch.equal(bb(x), bb.head(h))
    assert bb.stage_output_shapes(x) == [(8, 16, 16), (12, 8, 8), (16, 8, 8), (16,)]


def test_backbone_reports_its_device_and_probes_shapes_there() -> None:
    """A backbone moved to an accelerator (the meta device stands in for CUDA) sizes ICs from a CPU sample."""
    bb = make_tiny_backbone()
    assert bb.device == torch.device("cpu")
    bb.to("meta")
    assert bb.device.type == "meta"
    assert bb.stage_output_shapes(random_images(1)) == [(8, 16, 16), (12, 8, 8), (16, 8, 8), (16,)]
    assert StagedBackbone([nn.Flatten()], nn.Identity()).device == torch.device("cpu")  # no weights at all


def test_training_heads_leaves_backbone_weights_and_bn_statistics_unchanged() -> None:
    model = make_tiny_model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    heads_before = [p.clone() for p in model.heads.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # everything, as a careless caller would pass
    model.train()
    for step in range(3):
        out = model.all_exits(random_images(8, seed=step))
        target = out.final_log_probs.argmax(dim=-1)
        loss = sum(F.nll_loss(lp, target) for lp in out.ic_log_probs) + sum(
            F.nll_loss(lp, target) for lp in out.ensemble_log_probs
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.backbone.state_dict()
    assert any("running_mean" in k for k in before)
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(heads_before, model.heads.parameters()))


def test_uint8_preprocess_matches_sb3_scaling_bit_for_bit() -> None:
    x = torch.randint(0, 256, (2, 4, 8, 8), dtype=torch.uint8)
    out = UInt8ToUnitFloat()(x)
    assert out.dtype == torch.float32 and torch.equal(out, x.float() / 255.0)
    bb = StagedBackbone([nn.Flatten()], nn.Linear(4 * 64, NUM_CLASSES), preprocess=UInt8ToUnitFloat())
    assert torch.equal(bb(x), bb.head((x.float() / 255.0).flatten(1)))


@pytest.mark.parametrize(
    "build",
    [
        lambda: StagedBackbone([], nn.Linear(2, 2)),
        lambda: StagedBackbone([lambda x: x], nn.Linear(2, 2)),
        lambda: StagedBackbone([nn.ReLU()], "head"),
        lambda: StagedBackbone([nn.ReLU()], nn.Linear(2, 2), preprocess=255),
    ],
)
def test_bad_construction_raises_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()
