"""LeNet-5 (CIFAR variant as in kuangliu/pytorch-cifar and the authors' code).

conv 5x5 (6) -> ReLU -> maxpool 2 -> conv 5x5 (16) -> ReLU -> maxpool 2 -> fc 120 -> ReLU
-> fc 84 -> ReLU -> fc num_classes. No padding: the flattened size is 16*5*5 at 32 px and
16*4*4 at 28 px.

>>> net = create_model("lenet", in_channels=3, num_classes=10)
>>> sum(p.numel() for p in net.parameters())
62006
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from ._common import flat_dim, resolve_image_size
from ._registry import create_model, register_model

__all__ = ["LeNet"]

_ = create_model


class LeNet(nn.Sequential):
    """x: [B, C, S, S] -> logits [B, num_classes]."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int | None = None):
        size = resolve_image_size(in_channels, image_size)
        features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 6, 5),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(6, 16, 5),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
            )
        )
        d = flat_dim(features, in_channels, size)
        classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(d, 120),
                relu1=nn.ReLU(),
                fc2=nn.Linear(120, 84),
                relu2=nn.ReLU(),
                fc3=nn.Linear(84, num_classes),
            )
        )
        super().__init__(
            OrderedDict(features=features, flatten=nn.Flatten(), classifier=classifier)
        )


@register_model("lenet")
def lenet(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
    """LeNet-5, CIFAR variant."""
    return LeNet(in_channels, num_classes, **kw)
