"""EfficientNet-B0, CIFAR variant (kuangliu/pytorch-cifar, as in the authors' code).

Stem conv 3x3 (32, stride 1) -> BN -> swish, then 16 MBConv blocks (expansion 1x1 ->
depthwise kxk -> squeeze-and-excitation -> projection 1x1, skip when shapes match) in 7
stages with strides 1, 2, 2, 2, 1, 2, 1; global average pooling; dropout; linear read-out.
Swish is ``nn.SiLU`` (the same function, x * sigmoid(x)) as modules, so hooks see it.

Departures from the reference, both without effect there: its drop-connect rate is always
0 (its block counter never advances), so there is none here; the SE pooling is a module.
The final dropout (p = 0.2, as the reference) draws from the global RNG, which the training
engine seeds per epoch inside ``torch.random.fork_rng``; pass ``dropout=0`` to remove it.

>>> net = create_model("efficientnetb0")
>>> net(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import scaled
from ._registry import create_model, register_model

__all__ = ["EfficientNet", "MBConv", "SqueezeExcitation", "B0_CONFIG"]

_ = create_model

B0_CONFIG = {
    "num_blocks": [1, 2, 2, 3, 3, 4, 1],
    "expansion": [1, 6, 6, 6, 6, 6, 6],
    "out_channels": [16, 24, 40, 80, 112, 192, 320],
    "kernel_size": [3, 3, 5, 3, 5, 5, 3],
    "stride": [1, 2, 2, 2, 1, 2, 1],
}


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(se2(swish(se1(mean_hw(x)))))``: channel gates from the global mean."""

    def __init__(self, channels: int, se_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.se1 = nn.Conv2d(channels, se_channels, kernel_size=1, bias=True)
        self.act = nn.SiLU()
        self.se2 = nn.Conv2d(se_channels, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.se2(self.act(self.se1(self.pool(x)))))


class MBConv(nn.Module):
    """Expansion (1x1) + depthwise (k x k) + squeeze-excitation + projection (1x1)."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, expansion: int,
        se_ratio: float = 0.25,
    ):  # fmt: skip
        super().__init__()
        c = expansion * c_in
        self.expand = expansion != 1
        if self.expand:
            self.conv1 = nn.Conv2d(c_in, c, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.act1 = nn.SiLU()
        pad = 1 if kernel_size == 3 else 2
        self.conv2 = nn.Conv2d(c, c, kernel_size, stride=stride, padding=pad, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.act2 = nn.SiLU()
        self.se = SqueezeExcitation(c, int(c_in * se_ratio))
        self.conv3 = nn.Conv2d(c, c_out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x))) if self.expand else x
        out = self.se(self.act2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return out + x if self.has_skip else out


class EfficientNet(nn.Module):
    """x: [B, C, S, S] -> logits [B, num_classes]; works for any S >= 8."""

    def __init__(
        self,
        config: dict | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        dropout: float = 0.2,
        image_size: int | None = None,  # accepted for a uniform interface; not needed
        width_mult: float = 1.0,
    ):
        super().__init__()
        cfg = config or B0_CONFIG
        c = scaled(32, width_mult)
        self.conv1 = nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.act1 = nn.SiLU()
        blocks = []
        for e, c_out, n, k, s in zip(
            cfg["expansion"], cfg["out_channels"], cfg["num_blocks"], cfg["kernel_size"],
            cfg["stride"], strict=True,
        ):  # fmt: skip
            for stride in [s] + [1] * (n - 1):
                blocks.append(MBConv(c, scaled(c_out, width_mult), k, stride, e))
                c = scaled(c_out, width_mult)
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.act1(self.bn1(self.conv1(x))))
        out = self.flatten(self.avgpool(out))
        if self.dropout is not None:
            out = self.dropout(out)
        return self.linear(out)


@register_model("efficientnetb0")
def efficientnetb0(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
    """EfficientNet-B0, CIFAR variant."""
    return EfficientNet(B0_CONFIG, in_channels, num_classes, **kw)
