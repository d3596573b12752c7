"""Norm-matched noise: exact norms, statistics, replay, errors."""

from __future__ import annotations

import math

import pytest
import torch

from diffeosense.diffeo import apply, sample_fields, temperature_for_displacement
from diffeosense.noise import matched_noise, sample_noise


def _deformed(gen, dtype=torch.float32, B=16):
    x = torch.rand(B, 3, 32, 32, generator=gen, dtype=dtype)
    T = temperature_for_displacement(1.0, 3, 32)
    return x, apply(x, sample_fields(B, 32, T, 3, generator=gen, dtype=dtype))


def test_noise_norm_equals_the_displacement_norm_per_sample(gen, dtype):
    x, x_tau = _deformed(gen, dtype)
    eta = matched_noise(x, x_tau, generator=gen)
    want = (x_tau.double() - x.double()).flatten(1).norm(dim=1)
    got = eta.double().flatten(1).norm(dim=1)
    assert torch.allclose(got, want, rtol=1e-6)
    assert eta.dtype == dtype and eta.shape == x.shape


def test_noise_direction_is_isotropic_gaussian(gen):
    xi = sample_noise(torch.empty(4000, 50), gen).double()
    assert abs(xi.mean().item()) < 5 / math.sqrt(xi.numel())
    assert xi.var().item() == pytest.approx(1.0, abs=5 * math.sqrt(2 / xi.numel()))
    # Matched noise keeps the direction of xi.
    x = torch.zeros(4000, 50)
    eta = matched_noise(x, x + 1.0, xi=xi.float())
    cos = torch.nn.functional.cosine_similarity(eta.double(), xi, dim=1)
    assert torch.all(cos > 1 - 1e-6)


def test_replaying_xi_gives_the_same_noise(gen):
    x, x_tau = _deformed(gen)
    xi = sample_noise(x, torch.Generator().manual_seed(3))
    a = matched_noise(x, x_tau, xi=xi)
    b = matched_noise(x, x_tau, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_zero_perturbation_gives_zero_noise(gen):
    x = torch.rand(3, 4, generator=gen)
    assert torch.equal(matched_noise(x, x.clone(), generator=gen), torch.zeros_like(x))


def test_batch_matching_matches_the_mean_variance(gen):
    B, d = 2000, 100
    x = torch.zeros(B, d, dtype=torch.float64)
    scale = torch.linspace(0.5, 2.0, B, dtype=torch.float64)[:, None]
    x_tau = x + scale * torch.randn(B, d, generator=gen, dtype=torch.float64)
    eta = matched_noise(x, x_tau, generator=gen, match="batch")
    target = (x_tau - x).pow(2).sum(1).mean()
    assert eta.pow(2).sum(1).mean().item() == pytest.approx(target.item(), rel=0.02)
    # Same variance for every sample (not per-sample matched).
    per = eta.pow(2).sum(1)
    assert per[: B // 2].mean().item() == pytest.approx(per[B // 2 :].mean().item(), rel=0.05)


def test_rectified_noise_is_non_negative_and_matched(gen):
    x, x_tau = _deformed(gen, torch.float64)
    eta = matched_noise(x, x_tau, generator=gen, rectify=True)
    assert torch.all(eta >= 0)
    want = (x_tau - x).flatten(1).norm(dim=1)
    assert torch.allclose(eta.flatten(1).norm(dim=1), want, rtol=1e-12)
    eb = matched_noise(x, x_tau, generator=gen, rectify=True, match="batch")
    assert torch.all(eb >= 0)
    assert eb.pow(2).sum((1, 2, 3)).mean().item() == pytest.approx(
        (x_tau - x).pow(2).sum((1, 2, 3)).mean().item(), rel=0.05
    )


def test_bad_input():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        matched_noise(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="match must be"):
        matched_noise(x, x, match="global")
    with pytest.raises(ValueError, match="xi"):
        matched_noise(x, x, xi=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="batch"):
        matched_noise(torch.zeros(3), torch.zeros(3))


@pytest.mark.parametrize("int_dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_inputs_are_refused(int_dtype):
    """Integer noise cannot have the matched norm (it used to round silently)."""
    x = torch.zeros(2, 1, 4, 4, dtype=int_dtype)
    x_tau = torch.ones(2, 1, 4, 4, dtype=int_dtype)
    with pytest.raises(ValueError, match=f"floating-point tensors, got x of dtype {int_dtype}"):
        matched_noise(x, x_tau, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="floating-point"):
        sample_noise(x)
