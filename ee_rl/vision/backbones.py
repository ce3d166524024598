"""Vision backbones in plain torch, cut into stages for the early-exit core (no torchvision needed).

- ``resnet56`` (and ``resnet20``/``resnet110``): the CIFAR ResNet of SDN/ZTW (3 groups of basic blocks, 16/32/64
  channels, 1×1-conv shortcuts). Stage 0 is the stem conv; stages 1.. are the residual blocks. ``resnet20_w8`` is
  ResNet-20 with 8/16/32 channels: the digits default (8 ICs, IC 1 at ~18 % of the backbone's FLOPs).
- ``vgg16_bn``: SDN's VGG-16 with BatchNorm (13 conv blocks as stages; the FC layers form the head).
- ``mobilenet``: MobileNet v1 for 32×32 (13 depthwise-separable blocks after a stem conv).
- ``wrn32_4``: SDN's Wide-ResNet-32-4 (15 pre-activation wide blocks, dropout 0.3).
- ``resnet50``: torchvision's ResNet-50 with torchvision's module names (``conv1``, ``layer1.0.conv1``, ``fc`` …), so
  a torchvision state dict loads with ``strict=True``; stage 0 is the stem, stages 1..16 the bottlenecks.
- ``small_cnn``: a 6-block plain CNN (cheap; used by the tests).

ICs (ZTW appendix A.1) go after every block except the last (its output feeds the backbone's own head); for ResNet-50
after every third bottleneck, with IC conv channels ÷ 4 and LayerNorm on the cascade input. 64×64 inputs get a
stride-2 stem, as in SDN's Tiny ImageNet networks.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ee_rl.core import StagedBackbone
from ee_rl.errors import UserError


class Normalize(nn.Module):
    """Preprocess: ``(x - mean) / std`` per channel, for float images in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one entry per channel and std > 0, got {mean} and {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised images."""
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class ICPlacement:
    """Where ICs go on a backbone and how they are shaped (ZTW appendix A.1).

    Attributes:
        attach_after: 0-based stage indices, strictly increasing.
        channel_divisor: IC conv output channels = input channels // divisor (ResNet-50: 4).
        cascade_layer_norm: LayerNorm on the previous IC's logits (ResNet-50).
    """

    attach_after: tuple[int, ...]
    channel_divisor: int = 1
    cascade_layer_norm: bool = False


class StagedNet(nn.Module):
    """A trainable backbone ``preprocess -> stages -> head`` with the state-dict keys of :class:`StagedBackbone`.

    Train it as an ordinary module, then call :meth:`frozen` for the frozen backbone the core attaches ICs to (it
    shares these modules).
    """

    def __init__(
        self,
        arch: str,
        stages: Sequence[nn.Module],
        head: nn.Module,
        preprocess: nn.Module,
        placement: ICPlacement,
    ) -> None:
        super().__init__()
        self.arch = arch
        # Same registration order as StagedBackbone, so both state dicts list the same keys in the same order.
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.preprocess = preprocess
        self.placement = placement

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` for float images in [0, 1]."""
        h = self.preprocess(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)

    def final_linear(self) -> nn.Linear:
        """The last ``nn.Linear`` of the head (replaced for transfer learning)."""
        linears = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{self.arch}'s head has no nn.Linear")
        return linears[-1]

    def replace_final_linear(self, num_classes: int) -> nn.Linear:
        """Swap the head's last linear layer for a fresh one with ``num_classes`` outputs; return it."""
        old = self.final_linear()
        new = nn.Linear(old.in_features, num_classes).to(old.weight.device)
        for module in self.head.modules():
            for name, child in module.named_children():
                if child is old:
                    setattr(module, name, new)
                    return new
        raise ValueError(f"could not find the final linear layer in {self.arch}'s head")

    def frozen(self) -> StagedBackbone:
        """The frozen :class:`StagedBackbone` over the same modules (parameters stop requiring gradients)."""
        return StagedBackbone(list(self.stages), self.head, self.preprocess)


# ------------------------------------------------------------------------------------------------ CIFAR ResNets
class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs with BatchNorm) with a 1×1-conv + BN shortcut when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
            if stride != 1 or in_channels != channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _stem_stride(input_shape: Sequence[int]) -> int:
    return 2 if min(input_shape[1:]) >= 64 else 1


def _every_block_but_last(num_stages: int, first: int) -> tuple[int, ...]:
    return tuple(range(first, num_stages - 1))


def _init_conv_bn(module: nn.Module) -> None:
    """He (fan-out) init of every conv layer; every BatchNorm starts as the identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def cifar_resnet(depth: int, num_classes: int, input_shape: Sequence[int], width: int = 16) -> tuple[list, nn.Module]:
    """Stages and head of the CIFAR ResNet of depth ``6n + 2`` (He et al.; SDN's ResNet-56 for n = 9)."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 56, 110 ...), got {depth}")
    n = (depth - 2) // 6
    stages: list[nn.Module] = [
        nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, _stem_stride(input_shape), 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
    ]
    in_channels = width
    for group, channels in enumerate((width, 2 * width, 4 * width)):
        for b in range(n):
            stages.append(BasicBlock(in_channels, channels, 2 if (group > 0 and b == 0) else 1))
            in_channels = channels
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))
    return stages, head


# ------------------------------------------------------------------------------------------------------- VGG-16-BN
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = frozenset({1, 3, 6, 9, 12})


def vgg16_bn(num_classes: int, input_shape: Sequence[int]) -> tuple[list, nn.Module]:
    """SDN's VGG-16-BN: 13 conv-BN-ReLU(-maxpool) blocks; head = FC 512-512 (2048-1024 for 64×64) with dropout."""
    size = min(input_shape[1:])
    if size < 32:
        raise UserError(f"vgg16_bn halves the image 5 times and needs inputs of at least 32×32, got {size}×{size}")
    stages: list[nn.Module] = []
    in_channels = input_shape[0]
    for i, channels in enumerate(VGG16_CHANNELS):
        layers = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        if i in VGG16_POOL_AFTER:
            layers.append(nn.MaxPool2d(2))
        stages.append(nn.Sequential(*layers))
        in_channels = channels
    final_hw = (input_shape[1] // 32) * (input_shape[2] // 32)
    fc = (512, 512) if size < 64 else (2048, 1024)
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(512 * final_hw, fc[0]),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(fc[0], fc[1]),
        nn.Dropout(0.5),
        nn.Linear(fc[1], num_classes),
    )
    for m in [*stages, head]:
        for layer in m.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (9 * layer.out_channels)))
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, 0.01)
                nn.init.zeros_(layer.bias)
    return stages, head


# -------------------------------------------------------------------------------------------------------- MobileNet
MOBILENET_CFG = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024)


def _separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def mobilenet_v1(num_classes: int, input_shape: Sequence[int]) -> tuple[list, nn.Module]:
    """SDN's MobileNet v1 for 32×32: stem conv 32 channels, 13 depthwise-separable blocks, global pool, linear."""
    stages: list[nn.Module] = [
        nn.Sequential(nn.Conv2d(input_shape[0], 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
    ]
    in_channels = 32
    for entry in MOBILENET_CFG:
        channels, stride = (entry, 1) if isinstance(entry, int) else entry
        stages.append(_separable(in_channels, channels, stride))
        in_channels = channels
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))
    _init_conv_bn(nn.Sequential(*stages))
    return stages, head


# ---------------------------------------------------------------------------------------------------- Wide-ResNet
class WideBlock(nn.Module):
    """Pre-activation wide basic block (BN-ReLU-conv-dropout-BN-ReLU-conv) with a 1×1-conv shortcut if needed."""

    def __init__(self, in_channels: int, channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1)
        self.dropout = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1)
        self.shortcut = (
            nn.Conv2d(in_channels, channels, 1, stride) if stride != 1 or in_channels != channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(self.dropout(out))))
        return out + self.shortcut(x)


def wide_resnet(
    depth: int, widen: int, num_classes: int, input_shape: Sequence[int], dropout: float = 0.3
) -> tuple[list, nn.Module]:
    """SDN's Wide-ResNet-``depth``-``widen`` (depth = 6n + 2 blocks of two convs; WRN-32-4 has 15 blocks)."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"Wide-ResNet depth must be 6n + 2, got {depth}")
    n = (depth - 2) // 6
    stages: list[nn.Module] = [nn.Conv2d(input_shape[0], 16, 3, _stem_stride(input_shape), 1)]
    in_channels = 16
    for group, channels in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for b in range(n):
            stages.append(WideBlock(in_channels, channels, 2 if (group > 0 and b == 0) else 1, dropout))
            in_channels = channels
    head = nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(in_channels, num_classes),
    )
    for m in [*stages, head]:
        for layer in m.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(2))
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, 0.01)
                nn.init.zeros_(layer.bias)
    return stages, head


# ---------------------------------------------------------------------------------------------------- small CNN
def small_cnn(num_classes: int, input_shape: Sequence[int], width: int = 16) -> tuple[list, nn.Module]:
    """Six conv-BN-ReLU blocks (width, width, 2w/2, 2w, 4w/2, 4w; "/2" = stride 2), global pool, linear.

    Sized for the 8×8 digits (8 → 4 → 2 pixels); cheap enough to train many seeds on a CPU.
    """
    plan = ((width, 1), (width, 1), (2 * width, 2), (2 * width, 1), (4 * width, 2), (4 * width, 1))
    stages: list[nn.Module] = []
    in_channels = input_shape[0]
    for channels, stride in plan:
        stages.append(
            nn.Sequential(
                nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
        )
        in_channels = channels
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))
    _init_conv_bn(nn.Sequential(*stages))
    return stages, head


# ------------------------------------------------------------------------------------ torchvision-compatible ResNet-50
class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (v1.5: stride on the 3×3 conv), with torchvision's attribute names."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class TorchvisionResNet50(nn.Module):
    """ResNet-50 with exactly torchvision's module tree and state-dict keys (``torchvision.models.resnet50``)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
            layers = []
            for b in range(blocks):
                s = stride if b == 0 else 1
                down = None
                if b == 0 and (s != 1 or in_channels != width * 4):
                    down = nn.Sequential(nn.Conv2d(in_channels, width * 4, 1, s, bias=False), nn.BatchNorm2d(width * 4))
                layers.append(Bottleneck(in_channels, width, s, down))
                in_channels = width * 4
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def bottlenecks(self) -> list[nn.Module]:
        """The 16 bottleneck blocks in order."""
        return [b for i in range(1, 5) for b in getattr(self, f"layer{i}")]


def resnet50_stages(model: TorchvisionResNet50) -> tuple[list, nn.Module]:
    """Stages (stem, then the 16 bottlenecks) and head (avgpool, flatten, fc) over ``model``'s own modules."""
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    head = nn.Sequential(model.avgpool, nn.Flatten(), model.fc)
    return [stem, *model.bottlenecks()], head


# ---------------------------------------------------------------------------------------------------------- registry
def _resnet(depth: int) -> Callable:
    return lambda k, shape: cifar_resnet(depth, k, shape)


ARCHS: dict[str, Callable[[int, Sequence[int]], tuple[list, nn.Module]]] = {
    "resnet20": _resnet(20),
    "resnet20_w8": lambda k, shape: cifar_resnet(20, k, shape, width=8),
    "resnet56": _resnet(56),
    "resnet110": _resnet(110),
    "vgg16_bn": vgg16_bn,
    "mobilenet": mobilenet_v1,
    "wrn32_4": lambda k, shape: wide_resnet(32, 4, k, shape),
    "wrn16_4": lambda k, shape: wide_resnet(16, 4, k, shape),
    "small_cnn": small_cnn,
    "resnet50": lambda k, shape: resnet50_stages(TorchvisionResNet50(k)),
}
#: Architectures whose first stage is a stem with no IC after it.
_STEM_ARCHS = frozenset(
    {"resnet20", "resnet20_w8", "resnet56", "resnet110", "mobilenet", "wrn32_4", "wrn16_4", "resnet50"}
)


def default_placement(arch: str, num_stages: int) -> ICPlacement:
    """ZTW appendix A.1: an IC after every block but the last; ResNet-50: every third bottleneck, channels ÷ 4,
    LayerNorm on the cascade input."""
    if arch == "resnet50":
        return ICPlacement(tuple(range(3, num_stages - 1, 3)), channel_divisor=4, cascade_layer_norm=True)
    return ICPlacement(_every_block_but_last(num_stages, 1 if arch in _STEM_ARCHS else 0))


def build_backbone(
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    seed: int | None = None,
) -> StagedNet:
    """A freshly initialised :class:`StagedNet` of ``arch`` (one of ``ARCHS``) for ``input_shape`` ``(C, H, W)``."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; accepted: {', '.join(ARCHS)}")
    if arch == "resnet50" and tuple(input_shape[:1]) != (3,):
        raise UserError(f"resnet50 takes RGB images, got input shape {tuple(input_shape)}")
    if seed is not None:
        torch.manual_seed(seed)
    stages, head = ARCHS[arch](num_classes, input_shape)
    return StagedNet(arch, stages, head, Normalize(mean, std), default_placement(arch, len(stages)))


def load_torchvision_resnet50(
    path: str, mean: Sequence[float], std: Sequence[float]
) -> StagedNet:
    """A :class:`StagedNet` over a torchvision ResNet-50 state-dict file (loaded with ``strict=True``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"cannot read ResNet-50 weights {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise UserError(f"{path} is not a torchvision ResNet-50 state dict (no 'fc.weight' key)")
    model = TorchvisionResNet50(int(state["fc.weight"].shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path} does not match torchvision's ResNet-50: {first}") from None
    stages, head = resnet50_stages(model)
    return StagedNet("resnet50", stages, head, Normalize(mean, std), default_placement("resnet50", len(stages)))



DEFAULT_ARCH = {
    "cifar10": "resnet56",
    "cifar100": "resnet56",
    "cifar2": "resnet56",
    "tinyimagenet": "resnet56",
    "imagenet": "resnet50",
    "imagefolder": "resnet50",
    "digits": "resnet20_w8",
    "digits-noisy": "resnet20_w8",
}


def default_arch(dataset: str) -> str:
    """The architecture used when ``--arch`` is not given (ResNet-56 on CIFAR-like data, as ZTW's main table)."""
    if dataset not in DEFAULT_ARCH:
        raise UserError(f"unknown dataset {dataset!r}; accepted: {', '.join(DEFAULT_ARCH)}")
    return DEFAULT_ARCH[dataset]
