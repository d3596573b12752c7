"""Fully connected nets ``fc2``, ``fc4``, ``fc6``: L linear layers of width 64.

``fcL`` has L linear layers: L - 1 hidden layers of ``width`` units, each followed by ReLU,
and a linear read-out (the authors' ``DenseNet(n_layers)`` counts layers the same way).
Layer names: ``flatten``, ``features.fc1``, ``features.relu1``, ..., ``classifier.fcL``.

>>> net = create_model("fc2", in_channels=3, num_classes=10)
>>> sum(p.numel() for p in net.parameters())  # (3072*64 + 64) + (64*10 + 10)
197322
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from ._common import make_activation, resolve_image_size
from ._registry import create_model, register_model

__all__ = ["FullyConnected"]

_ = create_model  # used by the doctest


class FullyConnected(nn.Sequential):
    """``flatten -> [Linear(., width) -> act] * (depth - 1) -> Linear(width, num_classes)``.

    x: [B, C, S, S] with S = ``image_size``; returns logits [B, num_classes].
    """

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 64,
        image_size: int | None = None,
        activation: str = "relu",
    ):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        size = resolve_image_size(in_channels, image_size)
        d = in_channels * size * size
        hidden: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, depth):
            hidden[f"fc{i}"] = nn.Linear(d, width)
            hidden[f"{activation}{i}"] = make_activation(activation)
            d = width
        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(),
                features=nn.Sequential(hidden),
                classifier=nn.Sequential(OrderedDict([(f"fc{depth}", nn.Linear(d, num_classes))])),
            )
        )


def _factory(depth: int):
    def make(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
        return FullyConnected(depth, in_channels, num_classes, **kw)

    make.__name__ = f"fc{depth}"
    make.__doc__ = f"Fully connected net with {depth} linear layers (width 64 by default)."
    return make


for _depth in (2, 4, 6):
    register_model(f"fc{_depth}")(_factory(_depth))
