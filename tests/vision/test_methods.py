"""The heads ZTW / SDN / ablation methods build on a staged vision backbone (placement, strides, channels)."""

from __future__ import annotations

import torch

from ee_rl.core import AdditiveEnsemble, GeometricEnsemble
from ee_rl.core.method import SDN, ZTW, exit_method
from ee_rl.vision.backbones import ICPlacement, build_backbone
from ee_rl.vision.methods import build_model


def test_ztw_heads_cascade_and_ensemble_while_sdn_heads_are_independent():
    net = build_backbone("small_cnn", 10, (1, 8, 8), (0.3,), (0.4,), seed=0)
    sample = torch.zeros(1, 1, 8, 8)
    ztw = build_model(ZTW, net.frozen(), net.placement, 10, sample)
    sdn = build_model(SDN, net.frozen(), net.placement, 10, sample)
    assert [h.cascade_in for h in ztw.heads] == [0, 10, 10, 10, 10]
    assert all(h.detach_cascade for h in ztw.heads)
    assert [h.cascade_in for h in sdn.heads] == [0] * 5 and sdn.ensembles is None
    assert all(isinstance(e, GeometricEnsemble) for e in ztw.ensembles)
    additive = build_model(exit_method("ztw", additive=True, no_stop_gradient=True), net.frozen(), net.placement,
                           10, sample)
    assert all(isinstance(e, AdditiveEnsemble) for e in additive.ensembles)
    assert not any(h.detach_cascade for h in additive.heads)
    # IC conv keeps the channel count (ZTW A.1) and is stride 1 on CIFAR-sized maps
    assert [h.conv.out_channels for h in sdn.heads] == [h.conv.in_channels for h in sdn.heads]
    assert all(h.conv.stride == (1, 1) for h in sdn.heads)


def test_large_feature_maps_get_stride_2_ics_and_resnet50_placement_divides_channels():
    net = build_backbone("resnet20", 5, (3, 64, 64), (0.5,) * 3, (0.25,) * 3, seed=0)
    sample = torch.zeros(1, 3, 64, 64)
    model = build_model(ZTW, net.frozen(), net.placement, 5, sample, downsample=True)
    shapes = net.frozen().stage_output_shapes(sample)
    for head, s in zip(model.heads, model.attach_after):
        both_large = shapes[s][1] > 8 and shapes[s][2] > 8
        assert head.conv.stride == ((2, 2) if both_large else (1, 1))
    assert {h.conv.stride for h in model.heads} == {(1, 1), (2, 2)}
    placement = ICPlacement((1, 3), channel_divisor=4, cascade_layer_norm=True)
    quarter = build_model(ZTW, net.frozen(), placement, 5, sample, downsample=True)
    assert [h.conv.out_channels for h in quarter.heads] == [4, 4]  # 16 // 4
    assert quarter.heads[0].cascade_norm is None and quarter.heads[1].cascade_norm is not None
    with torch.no_grad():
        out = quarter.all_exits(torch.rand(2, 3, 64, 64))
    assert out.ic_logits.shape == (2, 2, 5)


def test_heads_are_built_on_the_backbones_device_whatever_the_samples():
    """A backbone already moved to an accelerator (here the meta device stands in for CUDA, which CI lacks) is probed
    on its own device and gets heads and ensembles there, from a CPU sample; the CPU case is unchanged."""
    net = build_backbone("small_cnn", 10, (1, 8, 8), (0.3,), (0.4,), seed=0).to("meta")
    model = build_model(ZTW, net.frozen(), net.placement, 10, torch.zeros(1, 1, 8, 8))
    assert {t.device.type for t in model.parameters()} == {"meta"}
    assert [h.cascade_in for h in model.heads] == [0, 10, 10, 10, 10]
    cpu = build_backbone("small_cnn", 10, (1, 8, 8), (0.3,), (0.4,), seed=0)
    sdn = build_model(SDN, cpu.frozen(), cpu.placement, 10, torch.zeros(1, 1, 8, 8))
    assert {t.device.type for t in sdn.parameters()} == {"cpu"}
