"""White noise matched in norm to a perturbation: sample a direction, then scale it.

The sensitivity G compares a diffeo with white noise of the same size (science.md §1)::

    eta = xi / ||xi|| * ||tau x - x||,   xi ~ N(0, I)      (match="sample", the default)

so that ``||eta_b|| = ||tau x_b - x_b||`` exactly for every sample b. Variants:

* ``match="batch"``: i.i.d. Gaussian noise whose variance is the batch-mean variance of the
  perturbation, ``sigma^2 = mean_b ||tau x_b - x_b||^2 / d`` (eta = sigma * xi).
* ``rectify=True``: the noise direction is rectified, ``xi -> relu(xi)``, before matching, so
  the noise is non-negative and has the matched norm (the 1D scale-detection model and the
  theory of spatial pooling use noise that the first ReLU rectifies).

Sample, then apply: :func:`sample_noise` draws ``xi``; :func:`matched_noise` scales a given ``xi``
(replay) or draws one from a generator.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.zeros(3, 1, 8, 8); x_tau = x + torch.arange(3.).view(3, 1, 1, 1)
>>> eta = matched_noise(x, x_tau, generator=g)
>>> eta.flatten(1).norm(dim=1).tolist()   # ||eta_b|| = ||tau x_b - x_b|| = 8 * b
[0.0, 8.0, 16.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_noise", "matched_noise"]

MATCHES = ("sample", "batch")


def sample_noise(x: Tensor, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """Standard Gaussian ``xi`` with the shape and dtype of ``x`` ([B, ...]), on ``device``
    (default: x's); ``x`` must be floating-point (Gaussian noise has no integer dtype).

    Drawn on the generator's device (CPU by default) and moved, so a CPU generator replays the
    same noise on any device. ``device="cpu"`` keeps it on the host (to move many draws to
    an accelerator in one copy).
    """
    if not x.is_floating_point():
        raise ValueError(f"sample_noise needs a floating-point x, got dtype {x.dtype}")
    dev = generator.device if generator is not None else torch.device("cpu")
    xi = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=dev)
    return xi.to(device=x.device if device is None else device, dtype=x.dtype)


def matched_noise(
    x: Tensor,
    x_perturbed: Tensor,
    *,
    xi: Tensor | None = None,
    generator: torch.Generator | None = None,
    match: str = "sample",
    rectify: bool = False,
) -> Tensor:
    """Noise ``eta`` [B, ...] matched to the perturbation ``x_perturbed - x`` (see module doc).

    Args:
        x, x_perturbed: ``[B, ...]`` clean and perturbed batches.
        xi: the noise direction to replay (from :func:`sample_noise`); drawn if None.
        match: ``"sample"`` (per-sample norm, exact) or ``"batch"`` (batch-mean variance).
        rectify: use ``relu(xi)`` as the direction (non-negative noise).

    Returns:
        ``eta`` with ``||eta_b|| = ||x_perturbed_b - x_b||`` (``match="sample"``); a sample whose
        perturbation is zero gets zero noise.

    Raises ValueError for integer or bool tensors: noise of an integer dtype cannot have the
    matched norm (convert the images to float first, e.g. ``x.float() / 255``).
    """
    for name, t in (("x", x), ("x_perturbed", x_perturbed)):
        if not (t.is_floating_point() or t.is_complex()):
            raise ValueError(
                f"matched_noise needs floating-point tensors, got {name} of dtype {t.dtype}: "
                f"integer noise cannot have the matched norm; convert first (e.g. "
                f"x.float() / 255)"
            )
    if x.shape != x_perturbed.shape:
        raise ValueError(
            f"x {tuple(x.shape)} and x_perturbed {tuple(x_perturbed.shape)} must have the same shape."
        )
    if match not in MATCHES:
        raise ValueError(f"match must be one of {MATCHES}, got {match!r}.")
    if x.ndim < 2:
        raise ValueError(f"expected a batch [B, ...] with B the first dim, got shape {tuple(x.shape)}.")
    if xi is None:
        xi = sample_noise(x, generator)
    elif xi.shape != x.shape:
        raise ValueError(f"xi {tuple(xi.shape)} must have the shape of x {tuple(x.shape)}.")
    xi = xi.to(device=x.device, dtype=x.dtype, non_blocking=True)  # no wait for the device
    if rectify:
        xi = xi.clamp_min(0)
    # Norms in float64: the identity ||eta|| = ||tau x - x|| then holds to rounding of x's dtype.
    delta = (x_perturbed.double() - x.double()).flatten(1)
    target = delta.norm(dim=1)  # [B]
    if match == "batch":
        d = delta.shape[1]
        sigma = (target.pow(2).mean() / d).sqrt()
        if rectify:
            # Keep the matched second moment: E relu(z)^2 = 1/2.
            sigma = sigma * 2**0.5
        return (xi.double() * sigma).to(x.dtype)
    norm = xi.double().flatten(1).norm(dim=1)
    if (norm == 0).any() and (target[norm == 0] > 0).any():
        raise ValueError("a noise direction xi is zero for a sample with a non-zero perturbation.")
    scale = torch.where(norm > 0, target / norm.clamp_min(1e-300), torch.zeros_like(norm))
    shape = (-1,) + (1,) * (x.ndim - 1)
    return (xi.double() * scale.view(shape)).to(x.dtype)
