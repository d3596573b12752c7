"""The paper's 1D CNN for the scale-detection task, and the idealized pure-pooling net.

``CNN1d``: ``L`` layers ``Conv1d(F, stride s) -> activation``, global average pooling, a linear
readout to a scalar (Tomasini et al. 2022, Fig. 7). Modules, in forward order:
``features.conv1, features.act1, ..., features.conv{L}, features.act{L}, pool, readout``.

* ``stride=1``: ``'same'`` padding (circular by default, so the net commutes with circular
  shifts of the input; for even F the extra pad goes to the right), length kept.
* ``stride=F``: no padding; layer k has ``floor(N / F^k)`` sites (aligned blocks of ``F^k``).
* Output: ``[B]`` when ``num_classes == 1`` (a scalar score f; the hinge loss uses
  ``max(0, 1 - y f)``), ``[B, num_classes]`` otherwise.

The regime (science.md §1b; the authors' 1D code):

* ``parametrization="standard"``: ordinary ``nn.Conv1d``; the scale of a layer lives in its
  initialization (``init``).
* ``parametrization="ntk"``: every weight and bias is drawn ``N(0, 1)`` and the scale is a
  fixed multiplier in the forward,
  ``y = sqrt(F) * act(conv(x, w / sqrt(C_in F)) + b)``. Same function at initialization as a
  standard net of matched variance, different gradient dynamics: SGD moves each weight by
  O(lr) whatever the width.
* ``readout="standard"``: ``b + (beta . y) / sqrt(H)`` (in the standard parametrization the
  1/sqrt(H) is the init scale of ``nn.Linear``); ``readout="mean-field"``:
  ``b + (beta . y) / H``, ``beta ~ N(0, 1)``, ``b = 0`` at init. The mean-field output starts
  at O(1/sqrt(H)) and can only reach the hinge margins if the features move: with the
  learning rate scaled as ``lr ~ H`` (the authors' ``0.01 * H``) this is the
  feature-learning regime.
* ``init`` (standard parametrization): ``"torch"`` (PyTorch's default,
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases) or ``"kaiming"`` (He normal
  ``N(0, 2 / fan_in)`` convolutions, LeCun normal readout, zero biases). The NTK
  parametrization has one init, ``"normal"``.
* ``generator``: every initial value is drawn from this ``torch.Generator`` (the global RNG
  is left alone); the registered factory takes ``init_seed`` instead (a JSON-able spec).

>>> import torch
>>> from diffeosense.models import create_model
>>> net = create_model("cnn1d", in_channels=1, num_classes=1, depth=3, width=8, filter_size=3)
>>> net(torch.zeros(4, 1, 32)).shape
torch.Size([4])
>>> [n for n, _ in net.named_modules() if n][:3]
['features', 'features.conv1', 'features.act1']
>>> mf = create_model("cnn1d", depth=2, width=16, filter_size=2, stride=2,
...                   parametrization="ntk", readout="mean-field", init_seed=0)
>>> float(mf.readout.weight_multiplier), mf.features.act1.gain == 2 ** 0.5
(0.0625, True)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import make_activation
from ._registry import register_model

__all__ = ["CNN1d", "NTKConv1d", "ScaledActivation", "Readout", "cnn1d",
           "homogeneous_pooling_net"]

PARAMETRIZATIONS = ("standard", "ntk")
READOUTS = ("standard", "mean-field")
INITS = ("torch", "kaiming", "normal")
_FUNCTIONS = {"relu": torch.relu, "tanh": torch.tanh}


class NTKConv1d(nn.Conv1d):
    """``Conv1d`` in NTK form: ``y = conv(x, c * w) + b`` with ``c = 1 / sqrt(C_in F)``.

    ``x: [B, C_in, N] -> [B, C_out, N']``. The multiplier ``c`` is a constant of the layer,
    not a parameter: gradients reach ``w`` scaled by ``c``. Tapped as one layer.
    """

    _tap_as_leaf = True  # diffeosense.layers: one representation, not its inner ops

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_multiplier = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0])

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.weight_multiplier, self.bias)


class ScaledActivation(nn.Module):
    """``y = gain * act(x)`` (the NTK form's ``sqrt(F)`` after each activation); any shape."""

    _tap_as_leaf = True
    _tap_kind = "activation"

    def __init__(self, name: str, gain: float) -> None:
        super().__init__()
        if name not in _FUNCTIONS:
            raise ValueError(f"activation must be one of {sorted(_FUNCTIONS)} in the NTK "
                             f"parametrization, got {name!r}")
        self.name, self.gain = name, float(gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.gain * _FUNCTIONS[self.name](x)

    def extra_repr(self) -> str:
        return f"{self.name}, gain={self.gain:.4g}"


class Readout(nn.Linear):
    """Linear readout with a fixed multiplier: ``y = x (c W)^T + b``, ``x: [B, H] -> [B, K]``
    (``c = 1/H`` mean-field, ``1/sqrt(H)`` standard, in the NTK parametrization)."""

    _tap_as_leaf = True

    def __init__(self, in_features: int, out_features: int, bias: bool, multiplier: float):
        super().__init__(in_features, out_features, bias=bias)
        self.weight_multiplier = float(multiplier)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.weight_multiplier, self.bias)


class CNN1d(nn.Module):
    """1D CNN: ``depth`` x (Conv1d -> activation), then optionally GAP and a linear readout.

    Args:
        in_channels: input channels (1 for scale detection).
        num_classes: readout outputs; 1 gives a scalar output ``[B]``.
        depth: number L of convolutional layers.
        width: channels H of every hidden layer.
        filter_size: F.
        stride: s, 1 or F.
        activation: ``"relu"`` or ``"tanh"`` (any of ``_common.make_activation`` in the
            standard parametrization).
        padding: ``"circular"`` or ``"zeros"`` (used when ``stride == 1``).
        bias: biases in the convolutions and the readout.
        head: if False, no pooling or readout: the forward returns the last representation
            ``[B, H, N_L]`` (the idealized net uses this).
        parametrization: ``"standard"`` or ``"ntk"`` (see the module doc).
        readout: ``"standard"`` or ``"mean-field"``.
        init: ``"torch"``, ``"kaiming"`` (standard) or ``"normal"`` (NTK); None: ``"torch"``
            for the standard parametrization, ``"normal"`` for NTK.
        generator: draws every initial value (None: the global RNG, as PyTorch does).
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
        parametrization: str = "standard",
        readout: str = "standard",
        init: str | None = None,
        generator: torch.Generator | None = None,
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
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got "
                             f"{parametrization!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        ntk = parametrization == "ntk"
        init = init or ("normal" if ntk else "torch")
        allowed = ("normal",) if ntk else ("torch", "kaiming")
        if init not in allowed:
            raise ValueError(f"init {init!r} does not fit the {parametrization} "
                             f"parametrization; use one of {allowed}")
        self.depth, self.filter_size, self.stride = depth, filter_size, stride
        self.parametrization, self.readout_kind, self.init = parametrization, readout, init
        # With a generator, the modules' own default draws (which use the global RNG) happen
        # inside a forked RNG and are then replaced: the global stream is left untouched.
        quiet = torch.random.fork_rng(devices=[]) if generator is not None else nullcontext()
        with quiet:
            self._build(in_channels, num_classes, depth, width, filter_size, stride, activation,
                        padding, bias, head, ntk, readout)
        self.reset_parameters(generator)

    def _build(self, in_channels, num_classes, depth, width, filter_size, stride, activation,
               padding, bias, head, ntk, readout) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        conv_cls = NTKConv1d if ntk else nn.Conv1d
        for k in range(1, depth + 1):
            pad = "same" if stride == 1 else 0
            layers[f"conv{k}"] = conv_cls(
                c_in, width, filter_size, stride=stride, padding=pad, padding_mode=padding,
                bias=bias,
            )
            layers[f"act{k}"] = (ScaledActivation(activation, math.sqrt(filter_size)) if ntk
                                 else make_activation(activation))
            c_in = width
        self.features = nn.Sequential(layers)
        self.head = head
        self.squeeze_output = head and num_classes == 1
        if head:
            self.pool = nn.AdaptiveAvgPool1d(1)
            mult = 1.0 / width if readout == "mean-field" else 1.0 / math.sqrt(width)
            self.readout = (Readout(width, num_classes, bias, mult) if ntk
                            else nn.Linear(width, num_classes, bias=bias))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw every weight and bias afresh from ``generator`` (see ``init``)."""
        def normal(t: Tensor, std: float) -> None:
            t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype) * std)

        def uniform(t: Tensor, bound: float) -> None:
            t.copy_((torch.rand(t.shape, generator=generator, dtype=t.dtype) * 2 - 1) * bound)

        if self.init == "torch" and generator is None:
            return  # PyTorch's own draws (from the global RNG) are already in place
        mods = [m for m in self.modules() if isinstance(m, nn.Conv1d | nn.Linear)]
        for m in mods:
            fan_in = m.weight[0].numel()
            is_readout = isinstance(m, nn.Linear)
            if self.init == "normal":  # NTK: everything N(0, 1), readout bias 0
                normal(m.weight, 1.0)
                if m.bias is not None:
                    (m.bias.zero_() if is_readout else normal(m.bias, 1.0))
            elif is_readout and self.readout_kind == "mean-field":
                normal(m.weight, 1.0 / fan_in)  # the 1/H of (beta . y) / H, in the init
                if m.bias is not None:
                    m.bias.zero_()
            elif self.init == "kaiming":
                normal(m.weight, math.sqrt((1.0 if is_readout else 2.0) / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
            else:  # PyTorch's default (kaiming_uniform with a = sqrt(5)), from the generator
                uniform(m.weight, 1.0 / math.sqrt(fan_in))
                if m.bias is not None:
                    uniform(m.bias, 1.0 / math.sqrt(fan_in))

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
    parametrization: str = "standard",
    readout: str = "standard",
    init: str | None = None,
    init_seed: int | None = None,
    **kwargs,
) -> CNN1d:
    """The paper's 1D CNN (see :class:`CNN1d`); ``init_seed`` seeds the generator of the
    initialization (None: the global RNG); ``kwargs`` must be empty."""
    if kwargs:
        raise ValueError(f"unknown options for cnn1d: {sorted(kwargs)}")
    g = None if init_seed is None else torch.Generator().manual_seed(int(init_seed))
    return CNN1d(
        in_channels, num_classes, depth=depth, width=width, filter_size=filter_size,
        stride=stride, activation=activation, padding=padding, bias=bias,
        parametrization=parametrization, readout=readout, init=init, generator=g,
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

