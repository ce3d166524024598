"""build_early_exit_model: heads and ensembles of an ExitMethod, sized from the backbone's stage outputs."""

from __future__ import annotations

import pytest
import torch

from ee_rl.core import AdditiveEnsemble, EarlyExitModel, GeometricEnsemble, make_internal_classifiers
from ee_rl.core.builder import build_early_exit_model
from ee_rl.core.method import SDN, ZTW, exit_method
from tests.core.builders import INPUT_SHAPE, NUM_CLASSES, make_tiny_backbone, random_images

SAMPLE = torch.zeros((1, *INPUT_SHAPE))
#: The tiny backbone's stages 0..2 output 8x16x16, 12x8x8 and 16x8x8 (stage 3 is flattened).
CHANNELS = [8, 12, 16]


def build(method=ZTW, **kwargs) -> EarlyExitModel:
    kwargs = {"num_classes": NUM_CLASSES, "attach_after": (0, 1, 2), "sample": SAMPLE, **kwargs}
    return build_early_exit_model(make_tiny_backbone(), method, **kwargs)


@pytest.mark.parametrize(
    ("method", "cascade_in", "ensemble", "detach"),
    [
        (ZTW, [0, NUM_CLASSES, NUM_CLASSES], GeometricEnsemble, True),
        (SDN, [0, 0, 0], None, True),
        (exit_method("ztw", ensemble_only=True, additive=True), [0, 0, 0], AdditiveEnsemble, True),
        (exit_method("ztw", cascade_only=True, no_stop_gradient=True), [0, NUM_CLASSES, NUM_CLASSES], None, False),
    ],
    ids=lambda v: v.name if hasattr(v, "name") else None,
)
def test_heads_and_ensembles_follow_the_method(method, cascade_in, ensemble, detach) -> None:
    model = build(method)
    assert model.attach_after == (0, 1, 2)
    assert [h.conv.in_channels for h in model.heads] == CHANNELS
    assert [h.conv.out_channels for h in model.heads] == CHANNELS  # ZTW keeps the channel count
    assert [h.cascade_in for h in model.heads] == cascade_in
    assert all(h.detach_cascade is detach for h in model.heads)
    if ensemble is None:
        assert model.ensembles is None
    else:
        assert [type(e) for e in model.ensembles] == [ensemble] * 3
        assert [e.num_members for e in model.ensembles] == [1, 2, 3]
    with torch.no_grad():
        assert model.all_exits(random_images(4)).answer_log_probs.shape == (4, 4, NUM_CLASSES)


def test_same_heads_as_built_by_hand_from_the_same_rng() -> None:
    """The builder only sizes and wires: from the same RNG state it draws exactly the heads built by hand."""
    torch.manual_seed(3)
    by_hand = make_internal_classifiers(CHANNELS, NUM_CLASSES, cascade=True, stride=2, pool_size=2)
    backbone = make_tiny_backbone()
    torch.manual_seed(3)
    built = build_early_exit_model(
        backbone, ZTW, num_classes=NUM_CLASSES, attach_after=(0, 1, 2), sample=SAMPLE, stride=2, pool_size=2
    )
    expected = by_hand.state_dict()
    assert built.heads.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in built.heads.state_dict().items())


def test_stride_function_sees_each_stage_shape_and_divisor_and_layer_norm_apply() -> None:
    seen = []

    def stride(shape: torch.Size) -> int:
        seen.append(tuple(shape))
        return 2 if shape[1] > 8 else 1

    model = build(stride=stride, channel_divisor=4, cascade_layer_norm=True, pool_size=2)
    assert seen == [(8, 16, 16), (12, 8, 8), (16, 8, 8)]
    assert [h.conv.stride for h in model.heads] == [(2, 2), (1, 1), (1, 1)]
    assert [h.conv.out_channels for h in model.heads] == [2, 3, 4]
    assert [h.cascade_norm is not None for h in model.heads] == [False, True, True]
    assert {h.pool.size for h in model.heads} == {2}


def test_seed_fixes_the_heads_and_leaves_the_global_rng_alone() -> None:
    backbone = make_tiny_backbone()  # seeds the global RNG itself: build it before taking the RNG state

    def seeded(seed: int) -> EarlyExitModel:
        return build_early_exit_model(
            backbone, ZTW, num_classes=NUM_CLASSES, attach_after=(0, 1, 2), sample=SAMPLE, seed=seed
        )

    state = torch.random.get_rng_state()
    a, b, c = seeded(7), seeded(7), seeded(8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.heads[2].linear.weight, b.heads[2].linear.weight)
    assert not torch.equal(a.heads[2].linear.weight, c.heads[2].linear.weight)


def test_model_lives_on_the_backbones_device() -> None:
    """The meta device stands in for an accelerator: probed there from a CPU sample, the heads are put there."""
    backbone = make_tiny_backbone().to("meta")
    model = build_early_exit_model(backbone, ZTW, num_classes=NUM_CLASSES, attach_after=(0, 2), sample=SAMPLE)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert [h.conv.in_channels for h in model.heads] == [8, 16]


@pytest.mark.parametrize(
    ("attach_after", "message"),
    [((0, 3), r"needs a \(C, H, W\) stage output, stage 3 gives \(16,\)"), ((0, 4), "stage indices in 0..3")],
)
def test_heads_need_image_shaped_stage_outputs(attach_after, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(attach_after=attach_after)
