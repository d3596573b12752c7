"""VGG11/13/16/19, with (``vgg11bn`` ...) and without batch norm: the CIFAR variant
(kuangliu/pytorch-cifar, as in the authors' code): 3x3 convolutions, 2x2 max-pooling, and a
single linear read-out on the 1x1x512 map left at 32 px.

Layer names, in forward order: ``features.conv1``, ``features.bn1`` (bn nets only),
``features.relu1``, ..., ``features.pool1`` ..., ``flatten``, ``classifier.fc``.
28-px inputs are zero-padded to 32 px first (``features.pad``), as the authors do for MNIST.

>>> sum(p.numel() for p in create_model("vgg11").parameters())
9225610
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from ._common import flat_dim, pad_to_32, resolve_image_size, scaled
from ._registry import create_model, register_model

__all__ = ["VGG", "VGG_CONFIGS"]

_ = create_model

# Output channels of each 3x3 convolution, "M" for a 2x2 max-pooling.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}  # fmt: skip


class VGG(nn.Sequential):
    """x: [B, C, S, S] -> logits [B, num_classes]."""

    def __init__(
        self,
        config: str | list[int | str],
        in_channels: int = 3,
        num_classes: int = 10,
        batch_norm: bool = False,
        image_size: int | None = None,
        pooling: str = "max",
        width_mult: float = 1.0,
    ):
        cfg = VGG_CONFIGS[config] if isinstance(config, str) else list(config)
        size = resolve_image_size(in_channels, image_size)
        pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
        if pooling not in pools:
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        pad = pad_to_32(size)
        if pad is not None:
            layers["pad"] = pad
        c, i, j = in_channels, 0, 0
        for v in cfg:
            if v == "M":
                j += 1
                layers[f"pool{j}"] = pools[pooling](kernel_size=2, stride=2)
            else:
                i += 1
                w = scaled(int(v), width_mult)
                layers[f"conv{i}"] = nn.Conv2d(c, w, kernel_size=3, padding=1)
                if batch_norm:
                    layers[f"bn{i}"] = nn.BatchNorm2d(w)
                layers[f"relu{i}"] = nn.ReLU()
                c = w
        features = nn.Sequential(layers)
        d = flat_dim(features, in_channels, size)
        super().__init__(
            OrderedDict(
                features=features,
                flatten=nn.Flatten(),
                classifier=nn.Sequential(OrderedDict(fc=nn.Linear(d, num_classes))),
            )
        )


def _factory(name: str, bn: bool):
    def make(in_channels: int = 3, num_classes: int = 10, **kw) -> nn.Module:
        return VGG(name, in_channels, num_classes, batch_norm=bn, **kw)

    make.__name__ = name + ("bn" if bn else "")
    make.__doc__ = f"{name.upper()} (CIFAR variant){' with batch norm' if bn else ''}."
    return make


for _name in VGG_CONFIGS:
    register_model(_name)(_factory(_name, False))
    register_model(_name + "bn")(_factory(_name, True))
