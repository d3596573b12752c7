"""Assertions for users' test suites: is a model stable to diffeomorphisms?

>>> import torch
>>> pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
>>> x = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
>>> r = assert_diffeo_stable(pool, x, max_R=0.5, n_probes=64)   # global pooling: R << 1
>>> r["D"] < r["G"]
True
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from .sensitivity import measure

__all__ = ["assert_diffeo_stable"]


def assert_diffeo_stable(
    model: nn.Module,
    data: Any,
    *,
    max_D: float | None = None,
    max_R: float | None = 1.0,
    layer: str = "output",
    n_probes: int = 128,
    n_se: float = 2.0,
    seed: int = 0,
    **measure_kwargs,
) -> dict[str, float]:
    """Assert that ``layer`` of ``model`` is stable to diffeos: ``D <= max_D`` and ``R <= max_R``.

    The bounds are tested on the measured value plus ``n_se`` standard errors, so a pass is not
    a lucky draw. ``measure_kwargs`` go to :func:`diffeosense.sensitivity.measure` (perturbation,
    batch size, device ...).

    Returns:
        the measured ``{"D", "G", "R", "D_se", "G_se", "R_se"}`` of that layer.

    Raises:
        AssertionError: naming the layer, the value, its error and the bound it broke.
    """
    if max_D is None and max_R is None:
        raise ValueError("give max_D and/or max_R, the bounds to assert")
    res = measure(model, data, layers=[layer], n_probes=n_probes, seed=seed, **measure_kwargs)
    row = res[layer]
    out = {k: float(row[k]) for k in ("D", "G", "R", "D_se", "G_se", "R_se")}
    for q, bound in (("D", max_D), ("R", max_R)):
        if bound is None:
            continue
        value, se = out[q], out[f"{q}_se"]
        upper = value + n_se * (se if math.isfinite(se) else 0.0)
        if not math.isfinite(value) or upper > bound:
            raise AssertionError(
                f"layer {layer!r} is not stable to diffeomorphisms: {q} = {value:.4g} "
                f"+- {se:.2g} (+{n_se:g} SE = {upper:.4g}) exceeds the bound {bound:g} "
                f"({n_probes} probes, seed {seed})"
            )
    return out
