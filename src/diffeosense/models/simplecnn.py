"""A parametric CNN for controlled experiments: ``depth`` conv layers of ``width`` channels.

Each layer: conv (F x F, stride s, padding p) [-> BN] -> activation [-> pooling 2x2], then
global average pooling and a linear read-out. Names: ``features.conv1``, ``features.bn1``,
``features.relu1`` (or ``tanh1``), ``features.pool1``, ..., ``gap``, ``flatten``,
``classifier.fc``. Pooling uses ``ceil_mode`` so that a deep net never shrinks a 1x1 map
to nothing; with ``pooling="none"`` the stride does the down-sampling.

>>> net = create_model("simplecnn", in_channels=1, depth=3, width=8, pooling="avg")
>>> net(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from ._common import make_activation
from ._registry import create_model, register_model

__all__ = ["SimpleCNN"]

_ = (create_model, torch)


class SimpleCNN(nn.Sequential):
    """x: [B, C, S, S] -> logits [B, num_classes].

    Args:
        depth: number of conv layers; width: channels of each.
        filter_size: F; stride: s; padding: p (None: F // 2, "same" for odd F and s = 1).
        pooling: "max", "avg" (2x2, stride 2, after every layer) or "none".
        activation: "relu" or "tanh" (an odd activation keeps the noise mean at zero).
        batch_norm: BN after every conv; bias: conv biases; padding_mode: as nn.Conv2d
            ("zeros", "circular", ...).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        depth: int = 4,
        width: int = 64,
        filter_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        pooling: str = "max",
        activation: str = "relu",
        batch_norm: bool = False,
        bias: bool = True,
        padding_mode: str = "zeros",
        image_size: int | None = None,  # accepted for a uniform interface; not needed
    ):
        if depth < 1 or width < 1 or filter_size < 1 or stride < 1:
            raise ValueError("depth, width, filter_size and stride must all be >= 1")
        pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "none": None}
        if pooling not in pools:
            raise ValueError(f"pooling must be 'max', 'avg' or 'none', got {pooling!r}")
        pad = filter_size // 2 if padding is None else int(padding)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for i in range(1, depth + 1):
            layers[f"conv{i}"] = nn.Conv2d(
                c, width, filter_size, stride=stride, padding=pad, bias=bias,
                padding_mode=padding_mode,
            )  # fmt: skip
            if batch_norm:
                layers[f"bn{i}"] = nn.BatchNorm2d(width)
            layers[f"{activation}{i}"] = make_activation(activation)
            if pools[pooling] is not None:
                layers[f"pool{i}"] = pools[pooling](kernel_size=2, stride=2, ceil_mode=True)
            c = width
        super().__init__(
            OrderedDict(
                features=nn.Sequential(layers),
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                classifier=nn.Sequential(OrderedDict(fc=nn.Linear(width, num_classes))),
            )
        )


@register_model("simplecnn")
def simplecnn(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
    """Parametric CNN (depth, width, filter size, stride, padding, pooling, activation)."""
    return SimpleCNN(in_channels, num_classes, **kw)
