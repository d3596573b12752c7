"""ResNet18/34/50, CIFAR variant (kuangliu/pytorch-cifar, as in the authors' code).

Stem: conv 3x3 (64, stride 1) -> BN -> ReLU; four stages ``layer1..layer4`` of basic
(18, 34) or bottleneck (50) blocks with strides 1, 2, 2, 2; global average pooling (the
4x4 average of the original at 32 px) and a linear read-out. Every ReLU is its own module,
so hooks see them: ``layer2.0.conv1``, ``layer2.0.bn1``, ``layer2.0.relu1``, ...,
``layer2.0.shortcut.conv``, ``layer2.0.shortcut.bn``, (fx: ``layer2.0.add``),
``layer2.0.relu2``.

>>> sum(p.numel() for p in create_model("resnet18").parameters())
11173962
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from ._common import scaled
from ._registry import create_model, register_model

__all__ = ["ResNet", "BasicBlock", "Bottleneck"]

_ = create_model


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
            bn=nn.BatchNorm2d(c_out),
        )
    )


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with 3x3 convolutions."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(c_in, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # `shortcut is None` is fixed at construction: no data-dependent control flow.
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + skip)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), plus shortcut, then ReLU."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = self.expansion * planes
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = _shortcut(c_in, c_out, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu3(out + skip)


class ResNet(nn.Module):
    """x: [B, C, S, S] -> logits [B, num_classes]; works for any S >= 8."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: list[int],
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int | None = None,  # accepted for a uniform interface; not needed
        width_mult: float = 1.0,
    ):
        super().__init__()
        c = scaled(64, width_mult)
        self.conv1 = nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU()
        planes_ = [scaled(p, width_mult) for p in (64, 128, 256, 512)]
        stages = zip(planes_, num_blocks, (1, 2, 2, 2), strict=True)
        for i, (planes, n, stride) in enumerate(stages):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(block(c, planes, s))
                c = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.flatten(self.avgpool(out)))


@register_model("resnet18")
def resnet18(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
    """ResNet18 (CIFAR variant): basic blocks [2, 2, 2, 2]."""
    return ResNet(BasicBlock, [2, 2, 2, 2], in_channels, num_classes, **kw)


@register_model("resnet34")
def resnet34(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
    """ResNet34 (CIFAR variant): basic blocks [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], in_channels, num_classes, **kw)


@register_model("resnet50")
def resnet50(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
    """ResNet50 (CIFAR variant): bottleneck blocks [3, 4, 6, 3]."""
    return ResNet(Bottleneck, [3, 4, 6, 3], in_channels, num_classes, **kw)
