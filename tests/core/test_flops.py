"""FLOPs from FlopCounterMode against the analytic count (2 FLOPs per multiply-add) on SB3's NatureCNN."""

from __future__ import annotations

import torch
from torch import nn

from ee_rl.core import ExitCosts, count_flops
from tests.core.builders import make_tiny_model, random_images


def conv_flops(cin: int, k: int, cout: int, hout: int, wout: int) -> int:
    return 2 * cin * k * k * cout * hout * wout


def linear_flops(n_in: int, n_out: int) -> int:
    return 2 * n_in * n_out


def test_nature_cnn_flops_match_analytic_count(bench_script) -> None:
    model, _ = bench_script.build_nature_cnn_early_exit(num_actions=6, ensembles=True)
    costs = model.exit_costs(torch.zeros((1, 4, 84, 84), dtype=torch.uint8))
    conv1 = conv_flops(4, 8, 32, 20, 20)  # 84 -> 20
    conv2 = conv_flops(32, 4, 64, 9, 9)  # 20 -> 9
    conv3 = conv_flops(64, 3, 64, 7, 7)  # 9 -> 7
    fc = linear_flops(64 * 7 * 7, 512)
    head = linear_flops(512, 6)
    assert costs.preprocess == 0
    assert costs.stages == (conv1, conv2, conv3 + fc)
    assert costs.head == head
    assert costs.backbone == conv1 + conv2 + conv3 + fc + head == 18_692_096
    # ICs: conv 3x3 stride 4 pad 1 keeping channels (20 -> 5, 9 -> 3), SDN pool (0 FLOPs), linear to 6 logits;
    # IC 2's linear also takes IC 1's 6 logits (cascade).
    ic1 = conv_flops(32, 3, 32, 5, 5) + linear_flops(32 * 16, 6)
    ic2 = conv_flops(64, 3, 64, 3, 3) + linear_flops(64 * 16 + 6, 6)
    assert costs.ics == (ic1, ic2)
    # Geometric ensemble m: one (K x m) @ (m x 1) matmul per sample.
    assert costs.ensembles == (2 * 6 * 1, 2 * 6 * 2)
    assert costs.cumulative == (
        conv1 + ic1 + 12,
        conv1 + conv2 + ic1 + ic2 + 12 + 24,
        costs.backbone + ic1 + ic2 + 12 + 24,
    )
    assert 2.6 < costs.backbone / costs.cumulative[0] < 2.7


def test_count_flops_counts_linear_and_conv_only() -> None:
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5))
    flops, out = count_flops(net, torch.randn(1, 2, 4, 4))
    assert flops == conv_flops(2, 3, 3, 2, 2) + linear_flops(12, 5) and out.shape == (1, 5)


def test_per_sample_cost_convention() -> None:
    costs = ExitCosts(preprocess=0, stages=(10, 20, 30), head=5, ics=(3, 4), ensembles=(1, 2), attach_after=(0, 1))
    assert costs.backbone == 65
    assert costs.cumulative == (10 + 3 + 1, 30 + 7 + 3, 65 + 7 + 3)
    idx = torch.tensor([0, 2, 1])
    assert costs.per_sample(idx).tolist() == [14, 75, 40]
    assert costs.per_sample(idx, never_exits_early=True).tolist() == [65, 65, 65]
    assert costs.relative[-1] == 75 / 65


def test_costs_are_measured_per_sample_and_cached_per_input_shape() -> None:
    model = make_tiny_model()
    small, big = model.exit_costs(random_images(1)), model.exit_costs(random_images(7))
    assert small == big and model.exit_costs(random_images(3)) is small
