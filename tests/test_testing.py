"""The user-facing stability assertion passes and fails where it should."""

from __future__ import annotations

import pytest
import torch

from diffeosense.testing import assert_diffeo_stable


def _smooth_images(n=64, size=16):
    # Images that vary on several scales, so a diffeo actually changes them.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 1, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(z, size=size, mode="bilinear", align_corners=False)


def test_global_pooling_passes_on_white_images_and_identity_fails():
    x = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    r = assert_diffeo_stable(pool, x, max_R=0.5, n_probes=64)
    assert r["R"] < 0.5 and r["D"] < r["G"]
    # On smooth images a deformation shifts the mean coherently while white noise averages
    # out over the pixels: global pooling is then *less* stable to diffeos than to noise.
    with pytest.raises(AssertionError, match="R = "):
        assert_diffeo_stable(pool, _smooth_images(), max_R=1.0, n_probes=64)
    x = _smooth_images()
    ident = torch.nn.Identity()
    with pytest.raises(AssertionError, match=r"layer 'output' is not stable.*R = 1"):
        assert_diffeo_stable(ident, x, max_R=0.5, n_probes=64)
    with pytest.raises(AssertionError, match="D = "):
        assert_diffeo_stable(ident, x, max_D=1e-3, max_R=None, n_probes=64)


def test_needs_a_bound():
    with pytest.raises(ValueError, match="max_D and/or max_R"):
        assert_diffeo_stable(torch.nn.Identity(), _smooth_images(8), max_D=None, max_R=None)
