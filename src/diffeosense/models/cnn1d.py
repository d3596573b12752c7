"""The paper's 1D CNN for the scale-detection task, and the idealized pure-pooling net.

``CNN1d``: ``L`` layers ``Conv1d(F, stride s) -> activation``, global average pooling, a linear
readout to a scalar (Tomasini et al. 2022, Fig. 7). Modules, in forward order:
``features.conv1, features.act1, ..., features.conv{L}, features.act{L}, pool, readout``.

* ``stride=1``: ``'same'`` padding (circular by default, so the net commutes with circular
  shifts of the input; for even F the extra pad goes to the right), length kept.
* ``stride=F``: no padding; layer k has ``floor(N / F^k)`` sites (aligned blocks of ``F^k``).
* Output: ``[B]`` when ``num_classes == 1`` (a scalar score f; the hinge loss uses
  ``max(0, 1 - y f)``), ``[B, num_classes]`` otherwise.

>>> import torch
>>> from diffeosense.models import create_model
>>> net = create_model("cnn1d", in_channels=1, num_classes=1, depth=3, width=8, filter_size=3)
>>> net(torch.zeros(4, 1, 32)).shape
torch.Size([4])
>>> [n for n, _ in net.named_modules() if n][:3]
['features', 'features.conv1', 'features.act1']
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from torch import Tensor

from ._common import make_activation
from ._registry import register_model

__all__ = ["CNN1d", "cnn1d", "homogeneous_pooling_net"]


class CNN1d(nn.Module):
    """1D CNN: ``depth`` x (Conv1d -> activation), then optionally GAP and a linear readout.

    Args:
        in_channels: input channels (1 for scale detection).
        num_classes: readout outputs; 1 gives a scalar output ``[B]``.
        depth: number L of convolutional layers.
        width: channels H of every hidden layer.
        filter_size: F.
        stride: s, 1 or F.
        activation: ``"relu"`` or ``"tanh"`` (any of ``_common.make_activation``).
        padding: ``"circular"`` or ``"zeros"`` (used when ``stride == 1``).
        bias: biases in the convolutions and the readout.
        head: if False, no pooling or readout: the forward returns the last representation
            ``[B, H, N_L]`` (the idealized net uses this).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        depth: int = 4,
        width: int = 64,
        filter_size: int = 3,
        stride: int = 1,
        activation: str = "relu",
        padding: str = "circular",
        bias: bool = True,
        head: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1 or filter_size < 1:
            raise ValueError(
                f"depth, width and filter_size must be >= 1, got {depth}, {width}, {filter_size}"
            )
        if stride not in (1, filter_size):
            raise ValueError(
                f"stride must be 1 or filter_size={filter_size} (the paper's two nets), got {stride}"
            )
        if padding not in ("circular", "zeros"):
            raise ValueError(f"padding must be 'circular' or 'zeros', got {padding!r}")
        self.depth, self.filter_size, self.stride = depth, filter_size, stride
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for k in range(1, depth + 1):
            pad = "same" if stride == 1 else 0
            layers[f"conv{k}"] = nn.Conv1d(
                c_in, width, filter_size, stride=stride, padding=pad, padding_mode=padding,
                bias=bias,
            )
            layers[f"act{k}"] = make_activation(activation)
            c_in = width
        self.features = nn.Sequential(layers)
        self.head = head
        self.squeeze_output = head and num_classes == 1
        if head:
            self.pool = nn.AdaptiveAvgPool1d(1)
            self.readout = nn.Linear(width, num_classes, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, C, N] -> [B]`` (scalar head), ``[B, num_classes]``, or ``[B, H, N_L]``."""
        x = self.features(x)
        if not self.head:
            return x
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.readout(x)
        if self.squeeze_output:
            x = x.squeeze(-1)
        return x


@register_model("cnn1d")
def cnn1d(
    in_channels: int = 1,
    num_classes: int = 1,
    depth: int = 4,
    width: int = 64,
    filter_size: int = 3,
    stride: int = 1,
    activation: str = "relu",
    padding: str = "circular",
    bias: bool = True,
    **kwargs,
) -> CNN1d:
    """The paper's 1D CNN (see :class:`CNN1d`); ``kwargs`` must be empty."""
    if kwargs:
        raise ValueError(f"unknown options for cnn1d: {sorted(kwargs)}")
    return CNN1d(
        in_channels, num_classes, depth=depth, width=width, filter_size=filter_size,
        stride=stride, activation=activation, padding=padding, bias=bias,
    )


def homogeneous_pooling_net(
    depth: int,
    filter_size: int,
    stride: int = 1,
    activation: str = "relu",
    padding: str = "circular",
    dtype: torch.dtype = torch.float64,
) -> CNN1d:
    """The idealized pure spatial-pooling net of the theory (``diffeosense.theory``).

    One channel, no bias, no head, every filter entry equal to ``s / F`` (an average for
    ``s = 1``, a block sum for ``s = F``), the activation after each layer. In ``eval`` mode,
    parameters frozen, ``float64`` by default. ``x: [B, 1, N] -> [B, 1, N_L]``.

    >>> net = homogeneous_pooling_net(depth=2, filter_size=2, stride=2)
    >>> net(torch.arange(8.0, dtype=torch.float64).view(1, 1, 8)).flatten().tolist()
    [6.0, 22.0]
    """
    net = CNN1d(
        1, 1, depth=depth, width=1, filter_size=filter_size, stride=stride,
        activation=activation, padding=padding, bias=False, head=False,
    ).to(dtype)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv1d):
                module.weight.fill_(stride / filter_size)
    net.requires_grad_(False)
    return net.eval()

