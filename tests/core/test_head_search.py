"""SelfXit head search: the architecture space, KL training on a medial dataset, and the Optuna search."""

from __future__ import annotations

import pytest
import torch

from ee_rl.core.head_search import (
    ConvLinearHead,
    HeadSpec,
    HeadTrial,
    SearchSpace,
    TrainSettings,
    agreement,
    head_flops,
    pick_head,
    search_head,
    train_head,
)

K = 4


def _medial_dataset(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage outputs (n, 3, 6, 6) and a fixed 'backbone' teacher's log-probs over K classes."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn((n, 3, 6, 6), generator=g)
    teacher = torch.randn((3 * 6 * 6, K), generator=torch.Generator().manual_seed(99))
    return feats, torch.log_softmax(2.0 * feats.flatten(1) @ teacher / 10, dim=-1)


def test_head_shapes_and_flops_match_hand_count() -> None:
    spec = HeadSpec(convs=((3, 2),), hidden=(8,))
    head = ConvLinearHead((4, 6, 6), 5, spec)
    x = torch.randn(2, 4, 6, 6)
    assert head(x).shape == (2, 5)
    # conv 3x3 stride 2 pad 1: 4 -> 4 channels at 3x3; 2 FLOPs per multiply-add.
    conv = 2 * (4 * 3 * 3) * (4 * 3 * 3)
    assert head_flops(head, x) == conv + 2 * 36 * 8 + 2 * 8 * 5
    flat = ConvLinearHead((10,), 3, HeadSpec())
    assert flat(torch.randn(2, 10)).shape == (2, 3) and head_flops(flat, torch.randn(1, 10)) == 2 * 10 * 3
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ConvLinearHead((10,), 3, HeadSpec(convs=((1, 1),)))
    with pytest.raises(ValueError, match="cascade"):
        head(x, torch.zeros(2, 5))
    assert HeadSpec.from_dict(spec.to_dict()) == spec and spec.describe() == "conv3/s2-fc8-out"


def test_train_head_learns_the_backbone_output_deterministically() -> None:
    feats, targets = _medial_dataset(256)
    reference = targets.argmax(dim=-1)
    settings = TrainSettings(epochs=15, batch_size=32, lr=3e-3, seed=1)
    heads = []
    for _ in range(2):
        torch.manual_seed(0)
        head = ConvLinearHead((3, 6, 6), K, HeadSpec())
        before = agreement(head, feats, reference)
        history = train_head(head, feats, targets, settings)
        heads.append(head)
    assert history[-1] < history[0] / 2
    assert agreement(heads[0], feats, reference) > max(0.8, before + 0.4)
    for a, b in zip(heads[0].state_dict().values(), heads[1].state_dict().values()):
        assert torch.equal(a, b)


def test_pick_head_takes_the_cheapest_within_the_slack() -> None:
    trials = [
        HeadTrial(HeadSpec(hidden=(64,)), 0.95, 1000),
        HeadTrial(HeadSpec(), 0.945, 200),
        HeadTrial(HeadSpec(convs=((1, 1),)), 0.90, 50),
        HeadTrial(HeadSpec(convs=((3, 1),)), 0.945, 200),
    ]
    assert pick_head(trials, 0.01).spec == HeadSpec()  # 0.945 >= 0.94, 200 FLOPs; tie at 200 keeps the first
    assert pick_head(trials, 0.0).spec == HeadSpec(hidden=(64,))
    assert pick_head(trials, 0.06).spec == HeadSpec(convs=((1, 1),))


def test_search_head_is_reproducible_and_keeps_the_picked_trial() -> None:
    feats, targets = _medial_dataset(160)
    val_feats, val_targets = _medial_dataset(64, seed=1)
    reference = val_targets.argmax(dim=-1)
    space = SearchSpace(max_convs=1, kernels=(1, 3), strides=(2,), widths=(8,))
    settings = TrainSettings(epochs=3, batch_size=32, lr=3e-3)
    results = [
        search_head(feats, targets, val_feats, reference, K, space=space, n_trials=4, settings=settings)
        for _ in range(2)
    ]
    a, b = results
    assert a.best == b.best and a.trials == b.trials
    assert a.best == pick_head(a.trials, 0.01)
    assert a.head.spec == a.best.spec
    assert agreement(a.head, val_feats, reference) == a.best.agreement
    assert head_flops(a.head, val_feats) == a.best.flops
    for t in a.trials:
        assert len(t.spec.convs) <= 1 and all(s == 2 for _, s in t.spec.convs) and t.spec.hidden in ((), (8,))
