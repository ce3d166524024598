"""Staged backbones: shapes, IC placement (ZTW A.1), torchvision-compatible ResNet-50 and the frozen view."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ee_rl.core import StagedBackbone
from ee_rl.errors import UserError
from ee_rl.vision.backbones import (
    TorchvisionResNet50,
    build_backbone,
    load_torchvision_resnet50,
    resnet50_stages,
)

RGB_MEAN, RGB_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.mark.parametrize(
    ("arch", "num_stages", "attach_after", "run_forward"),
    [
        ("resnet56", 28, tuple(range(1, 27)), True),  # stem + 27 blocks; an IC after every block but the last
        ("vgg16_bn", 13, tuple(range(12)), False),  # 13 conv blocks; the FC layers are the head
        ("mobilenet", 14, tuple(range(1, 13)), True),  # stem + 13 separable blocks
        ("wrn32_4", 16, tuple(range(1, 15)), False),  # stem + 15 wide blocks (2.4 GFLOPs: no forward here)
    ],
)
def test_cifar_backbones_are_staged_with_an_ic_after_every_block_but_the_last(
    arch, num_stages, attach_after, run_forward
):
    net = build_backbone(arch, 10, (3, 32, 32), RGB_MEAN, RGB_STD, seed=0).eval()
    assert len(net.stages) == num_stages and net.placement.attach_after == attach_after
    if not run_forward:
        return
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 10)
    frozen = net.frozen()
    with torch.no_grad():
        assert torch.equal(frozen(x), logits)
    assert all(len(s) == 3 for s in frozen.stage_output_shapes(x))


def test_resnet56_has_the_cifar_resnet_shape_and_cost():
    net = build_backbone("resnet56", 10, (3, 32, 32), RGB_MEAN, RGB_STD)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.856e6, rel=0.01)
    shapes = net.frozen().stage_output_shapes(torch.zeros(1, 3, 32, 32))
    assert shapes[0] == (16, 32, 32) and shapes[9] == (16, 32, 32)  # stem, then 9 blocks per group
    assert shapes[10] == (32, 16, 16) and shapes[19] == (64, 8, 8) and shapes[27] == (64, 8, 8)
    # 64x64 inputs (Tiny ImageNet) get a stride-2 stem, as SDN's networks
    tiny = build_backbone("resnet56", 200, (3, 64, 64), RGB_MEAN, RGB_STD)
    assert tiny.frozen().stage_output_shapes(torch.zeros(1, 3, 64, 64))[1] == (16, 32, 32)


def test_frozen_backbone_shares_weights_and_state_dict_keys():
    net = build_backbone("small_cnn", 10, (1, 8, 8), (0.3,), (0.4,), seed=0)
    frozen = net.frozen()
    assert isinstance(frozen, StagedBackbone)
    assert list(frozen.state_dict()) == list(net.state_dict())
    assert all(not p.requires_grad for p in net.parameters())
    frozen.train()
    assert not frozen.training  # BatchNorm statistics stay frozen


def test_vgg_rejects_inputs_too_small_for_its_five_pools():
    with pytest.raises(UserError, match="32"):
        build_backbone("vgg16_bn", 10, (1, 8, 8), (0.3,), (0.4,))


def test_unknown_architecture_lists_the_accepted_ones():
    with pytest.raises(UserError, match="resnet56"):
        build_backbone("resnet57", 10, (3, 32, 32), RGB_MEAN, RGB_STD)


@pytest.fixture(scope="module")
def resnet50() -> TorchvisionResNet50:
    """One ResNet-50 with 7 classes and non-trivial BatchNorm statistics (built once: 25 M parameters)."""
    torch.manual_seed(0)
    model = TorchvisionResNet50(num_classes=7).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.9, 1.1)
    return model


def test_resnet50_has_torchvisions_parameters_and_keys(resnet50):
    state = resnet50.state_dict()
    assert len(state) == 320
    assert sum(p.numel() for p in resnet50.parameters()) == 25_557_032 - 1000 * 2049 + 7 * 2049
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer2.3.conv2.weight",
                "layer3.5.bn3.num_batches_tracked", "layer4.2.conv3.weight", "fc.bias"):
        assert key in state
    assert state["layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    # v1.5, as torchvision: the stride sits on the 3x3 conv
    assert resnet50.layer2[0].conv2.stride == (2, 2) and resnet50.layer2[0].conv1.stride == (1, 1)
    stages, head = resnet50_stages(resnet50)
    assert stages[1] is resnet50.layer1[0] and stages[16] is resnet50.layer4[2] and head[2] is resnet50.fc


def test_resnet50_state_dict_file_loads_strictly_and_stages_match_the_model(tmp_path, resnet50):
    path = tmp_path / "resnet50.pth"
    state = resnet50.state_dict()
    torch.save(state, path)
    net = load_torchvision_resnet50(str(path), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()
    assert len(net.stages) == 17 and net.placement.attach_after == (3, 6, 9, 12, 15)
    assert net.placement.channel_divisor == 4 and net.placement.cascade_layer_norm
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), resnet50(x), atol=1e-5)
    del state["layer3.2.bn1.running_mean"]
    torch.save(state, path)
    with pytest.raises(UserError, match="does not match torchvision's ResNet-50"):
        load_torchvision_resnet50(str(path), RGB_MEAN, RGB_STD)
    path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_torchvision_resnet50(str(path), RGB_MEAN, RGB_STD)


def test_replace_final_linear_swaps_only_the_last_layer():
    net = build_backbone("vgg16_bn", 10, (3, 32, 32), RGB_MEAN, RGB_STD)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    new = net.replace_final_linear(4)
    assert net.final_linear() is new and new.out_features == 4
    after = net.state_dict()
    changed = {k for k in before if k not in after or not torch.equal(before[k], after[k])}
    assert changed == {"head.6.weight", "head.6.bias"}


def test_backbone_checkpoint_of_another_definition_is_a_one_line_error(tmp_path):
    from ee_rl.vision.checkpoint import backbone_record, load_backbone, save_torch

    net = build_backbone("small_cnn", 10, (1, 8, 8), (0.3,), (0.4,), seed=0)
    record = backbone_record(net, {"dataset": "digits", "num_classes": 10, "input_shape": [1, 8, 8],
                                   "mean": [0.3], "std": [0.4]})
    loaded, _ = load_backbone(save_torch(tmp_path / "backbone.pt", record))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    record["state_dict"]["stages.0.0.weight"] = torch.zeros(32, 1, 3, 3)  # e.g. an older, wider small_cnn
    save_torch(tmp_path / "backbone.pt", record)
    with pytest.raises(UserError, match="does not fit the current small_cnn definition") as info:
        load_backbone(tmp_path / "backbone.pt")
    assert "\n" not in str(info.value)
