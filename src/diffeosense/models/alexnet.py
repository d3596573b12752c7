"""AlexNet, CIFAR variant of the authors (diffeo-sota): 3x3 convolutions, first with stride 2.

features: conv 3x3/2 (64) -> ReLU -> maxpool -> conv (192) -> ReLU -> maxpool -> conv (384)
-> ReLU -> conv (256) -> ReLU -> conv (256) -> ReLU -> maxpool (32 px -> 2x2x256);
classifier: [dropout] -> fc 4096 -> ReLU -> [dropout] -> fc 4096 -> ReLU -> fc num_classes.
28-px inputs are zero-padded to 32 px first (as the authors do for MNIST).

Dropout (p = 0.5 by default, as the authors) draws from the global RNG; the training engine
seeds it per epoch inside ``torch.random.fork_rng``, so training stays exactly resumable.
Pass ``dropout=0`` for a net without it.

>>> net = create_model("alexnet", in_channels=3, num_classes=10)
>>> sum(p.numel() for p in net.parameters())
23272266
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from ._common import flat_dim, pad_to_32, resolve_image_size, scaled
from ._registry import create_model, register_model

__all__ = ["AlexNet"]

_ = create_model


class AlexNet(nn.Sequential):
    """x: [B, C, S, S] -> logits [B, num_classes]."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int | None = None,
        dropout: float = 0.5,
        width_mult: float = 1.0,
    ):
        size = resolve_image_size(in_channels, image_size)
        w = {c: scaled(c, width_mult) for c in (64, 192, 384, 256, 4096)}
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        pad = pad_to_32(size)
        if pad is not None:
            layers["pad"] = pad
        layers.update(
            conv1=nn.Conv2d(in_channels, w[64], kernel_size=3, stride=2, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(w[64], w[192], kernel_size=3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            conv3=nn.Conv2d(w[192], w[384], kernel_size=3, padding=1),
            relu3=nn.ReLU(),
            conv4=nn.Conv2d(w[384], w[256], kernel_size=3, padding=1),
            relu4=nn.ReLU(),
            conv5=nn.Conv2d(w[256], w[256], kernel_size=3, padding=1),
            relu5=nn.ReLU(),
            pool3=nn.MaxPool2d(2),
        )
        features = nn.Sequential(layers)
        d = flat_dim(features, in_channels, size)
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if dropout > 0:
            head["dropout1"] = nn.Dropout(dropout)
        head.update(fc1=nn.Linear(d, w[4096]), relu1=nn.ReLU())
        if dropout > 0:
            head["dropout2"] = nn.Dropout(dropout)
        head.update(fc2=nn.Linear(w[4096], w[4096]), relu2=nn.ReLU(),
                    fc3=nn.Linear(w[4096], num_classes))
        super().__init__(
            OrderedDict(features=features, flatten=nn.Flatten(), classifier=nn.Sequential(head))
        )


@register_model("alexnet")
def alexnet(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
    """AlexNet, CIFAR variant (authors' diffeo-sota)."""
    return AlexNet(in_channels, num_classes, **kw)
