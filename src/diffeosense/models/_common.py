"""Helpers shared by the model families (private)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["resolve_image_size", "flat_dim", "pad_to_32", "make_activation", "scaled"]


def resolve_image_size(in_channels: int, image_size: int | None) -> int:
    """The input side a model is built for: ``image_size``, or by default 28 px for one
    channel (MNIST-like) and 32 px otherwise (CIFAR-like), the authors' convention."""
    if image_size is None:
        return 28 if in_channels == 1 else 32
    if int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8 px, got {image_size}")
    return int(image_size)


def scaled(channels: int, width_mult: float) -> int:
    """``max(1, round(channels * width_mult))``: a layer's width in a net narrowed (or
    widened) by ``width_mult`` (all of a family's hidden widths scale together; the input
    channels and the classes do not).

    >>> scaled(64, 0.25), scaled(3, 0.1), scaled(192, 1.0)
    (16, 1, 192)
    """
    if not (float(width_mult) > 0):
        raise ValueError(f"width_mult must be > 0 (1: the published widths), got {width_mult}")
    return max(1, round(int(channels) * float(width_mult)))


def pad_to_32(image_size: int) -> nn.Module | None:
    """Zero padding that brings a 28-px input to 32 px (the authors pad MNIST this way so
    CIFAR architectures apply unchanged), or None for inputs of 32 px and more."""
    if image_size >= 32:
        return None
    return nn.ZeroPad2d((32 - image_size) // 2)


@torch.no_grad()
def flat_dim(features: nn.Module, in_channels: int, image_size: int) -> int:
    """Number of features after ``features`` for one input [1, C, S, S] (a dry run)."""
    was_training = features.training
    features.eval()
    out = features(torch.zeros(1, in_channels, image_size, image_size))
    features.train(was_training)
    return int(out[0].numel())


def make_activation(name: str) -> nn.Module:
    """A fresh activation module (never shared, never in-place: a forward hook on the layer
    before must see its output unmodified)."""
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU}
    if name not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {name!r}")
    return acts[name]()
