"""Properties of the max-entropy diffeomorphisms that could fail."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from diffeosense.diffeo import (
    Diffeo,
    DiffeoFields,
    apply,
    jacobian_determinant,
    mean_squared_displacement,
    sample_fields,
    temperature_for_displacement,
    temperature_range,
    typical_displacement,
    warp,
)

# Many tests use temperatures outside the natural range on purpose (clamping, statistics).
pytestmark = pytest.mark.filterwarnings("ignore:T outside the natural range")


# ------------------------------------------------------------------ reference (brute force)
def reference_remap(img: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, interp: str):
    """The published per-pixel algorithm (Petrini et al.'s ``remap``), written fresh."""
    n, m = img.shape[-2:]
    y, x = torch.meshgrid(
        torch.arange(n, dtype=dx.dtype), torch.arange(m, dtype=dx.dtype), indexing="ij"
    )
    xn = (x - dx).clamp(0, m - 1)
    yn = (y - dy).clamp(0, n - 1)
    if interp == "bilinear":
        xf, yf = xn.floor().long(), yn.floor().long()
        xc, yc = xn.ceil().long(), yn.ceil().long()
        xv, yv = xn - xf, yn - yf
        return (
            (1 - yv) * (1 - xv) * img[..., yf, xf]
            + (1 - yv) * xv * img[..., yf, xc]
            + yv * (1 - xv) * img[..., yc, xf]
            + yv * xv * img[..., yc, xc]
        )
    if interp == "gaussian":  # normalized over *all* pixels, O(n^4)
        s = gaussian_width_from_kernel()
        c = torch.exp(-((xn[:, :, None, None] - x) ** 2 + (yn[:, :, None, None] - y) ** 2) / (2 * s**2))
        c = c / c.sum([2, 3], keepdim=True)
        return (c * img[..., None, None, :, :]).sum([-1, -2])
    raise AssertionError(interp)


def gaussian_width_from_kernel() -> float:
    """The width sigma of the library's Gaussian interpolation, read off its kernel.

    By definition the kernel weighs a source pixel at distance d by exp(-d^2 / (2 sigma^2)).
    Warping a single bright pixel by (almost) the identity spreads it with that kernel: the
    neighbour at distance 1 and the pixel itself stand in the ratio exp(-1 / (2 sigma^2)), so
    sigma = (2 ln(out[0] / out[1]))^(-1/2). (Not a copy of the constant: a kernel with another
    width or a wrong exponent gives another value.) The field is 1e-13, not 0, because a zero
    field returns the image untouched.
    """
    n = 9
    img = torch.zeros(1, 1, n, n, dtype=torch.float64)
    img[..., 4, 4] = 1.0
    tiny = DiffeoFields(torch.full((1, 2, 3, 3), 1e-13, dtype=torch.float64), torch.zeros(1),
                        torch.full((1,), 3), (n, n))  # fmt: skip
    out = apply(img, tiny, "gaussian")[0, 0]
    return float((2 * torch.log(out[4, 4] / out[4, 5])) ** -0.5)


def test_gaussian_interpolation_width_is_the_published_one():
    # science.md: "a Gaussian kernel of width 0.4715 px" (the authors' remap)
    assert gaussian_width_from_kernel() == pytest.approx(0.4715, abs=1e-6)


def reference_field(coeffs_2d: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """u[y, x] = sum_ij C_ij sin(i pi x) sin(j pi y) by explicit loops over modes."""
    xs = torch.linspace(0, 1, W, dtype=torch.float64)
    ys = torch.linspace(0, 1, H, dtype=torch.float64)
    u = torch.zeros(H, W, dtype=torch.float64)
    K = coeffs_2d.shape[-1]
    for i in range(1, K + 1):
        for j in range(1, K + 1):
            u += coeffs_2d[i - 1, j - 1] * torch.sin(i * math.pi * xs)[None, :] * torch.sin(
                j * math.pi * ys
            )[:, None]
    return u


# ------------------------------------------------------------------ natural range & formulas
def test_temperature_formulas_are_consistent():
    n, c = 32, 3
    tmin, tmax = temperature_range(n, c)
    assert tmin == pytest.approx(1 / (math.pi * n**2 * math.log(c)))
    assert tmax == pytest.approx(4 / (math.pi**3 * c**2 * math.log(c)))
    # T_min is a typical displacement of half a pixel, and the inverse function round-trips.
    assert typical_displacement(tmin, c, n) == pytest.approx(0.5)
    for delta in (0.3, 1.0, 2.5):
        T = temperature_for_displacement(delta, c, n)
        assert typical_displacement(T, c, n) == pytest.approx(delta)
    assert temperature_for_displacement(1.0, 3, 32) == pytest.approx(1.1318e-3, rel=1e-3)


def test_temperature_range_accepts_tensors():
    cuts = torch.tensor([2.0, 3.0, 5.0])
    tmin, tmax = temperature_range(28, cuts)
    for k, c in enumerate(cuts.tolist()):
        a, b = temperature_range(28, c)
        assert tmin[k].item() == pytest.approx(a) and tmax[k].item() == pytest.approx(b)


def test_typical_displacement_is_the_large_cut_asymptote_of_the_exact_centre_value():
    T, n = 1e-4, 32
    ratios = [
        mean_squared_displacement(T, c, n, "centre") / typical_displacement(T, c, n) ** 2
        for c in (3, 10, 100, 1000)
    ]
    # Exact / asymptotic decreases monotonically towards 1 (the correction is O(1 / ln c)).
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))
    assert ratios[0] == pytest.approx(1.6225, abs=1e-3) and 1 < ratios[-1] < 1.07


# ------------------------------------------------------------------ coefficient statistics
@pytest.mark.parametrize("cut", [1, 3, 5])
def test_coefficient_variance_per_mode_and_cutoff(cut, gen):
    T, B = 0.01, 20000
    f = sample_fields(B, 16, T, cut, generator=gen, dtype=torch.float64)
    assert f.coeffs.shape == (B, 2, cut, cut)
    k = torch.arange(1, cut + 1, dtype=torch.float64)
    r2 = k[:, None] ** 2 + k[None, :] ** 2
    inside = r2 < (cut + 0.5) ** 2
    var = f.coeffs.var(dim=0)  # [2, K, K]
    expected = torch.where(inside, T / r2, torch.zeros(()))
    # Sample variance of a Gaussian: relative standard error sqrt(2 / B) ~ 1 %; allow 5 sigma.
    tol = 5 * math.sqrt(2 / B)
    assert torch.all(f.coeffs[:, :, ~inside] == 0), "modes beyond the cutoff must be exactly zero"
    assert torch.allclose(var[:, inside], expected[inside].expand(2, -1), rtol=tol)
    assert f.coeffs.mean(0).abs().max() < 5 * math.sqrt(T / 2 / B)


def test_coefficients_1d(gen):
    T, B, cut = 0.02, 20000, 4
    f = sample_fields(B, (50,), T, cut, generator=gen, dtype=torch.float64)
    assert f.coeffs.shape == (B, 1, cut)
    k = torch.arange(1, cut + 1, dtype=torch.float64)
    assert torch.allclose(f.coeffs.var(0)[0], T / k**2, rtol=5 * math.sqrt(2 / B))


def test_per_sample_cut_and_temperature(gen):
    cuts = torch.tensor([2, 5, 3])
    Ts = torch.tensor([1e-3, 2e-3, 0.0])
    f = sample_fields(3, (20, 30), Ts, cuts, generator=gen, dtype=torch.float64)
    assert f.coeffs.shape == (3, 2, 5, 5)
    k = torch.arange(1, 6)
    r2 = k[:, None] ** 2 + k[None, :] ** 2
    for b, c in enumerate(cuts.tolist()):
        assert torch.all(f.coeffs[b, :, ~(r2 < (c + 0.5) ** 2)] == 0)
    assert torch.all(f.coeffs[2] == 0)  # T = 0 -> no displacement


def test_field_matches_explicit_mode_sum(gen):
    f = sample_fields(2, (9, 13), 5e-3, 4, generator=gen, dtype=torch.float64)
    u = f.field()
    for b in range(2):
        for comp in range(2):
            ref = reference_field(f.coeffs[b, comp], 9, 13)
            assert torch.allclose(u[b, comp], ref, atol=1e-14)
    disp = f.displacement()
    assert torch.allclose(disp[:, 0], 13 * u[:, 0]) and torch.allclose(disp[:, 1], 9 * u[:, 1])


def test_fields_vanish_on_the_border(gen):
    d = sample_fields(8, (12, 17), 1e-2, 5, generator=gen, dtype=torch.float64).displacement()
    for edge in (d[..., 0, :], d[..., -1, :], d[..., :, 0], d[..., :, -1]):
        assert edge.abs().max() < 1e-12
    d1 = sample_fields(8, (21,), 1e-2, 5, generator=gen, dtype=torch.float64).displacement()
    assert d1[..., [0, -1]].abs().max() < 1e-12


@pytest.mark.parametrize("where", ["centre", "average"])
def test_mean_squared_displacement_matches_the_exact_formula(where, gen):
    n, cut, B = 33, 3, 20000  # odd n: a pixel sits exactly at the centre
    T = temperature_for_displacement(1.0, cut, n)
    d = sample_fields(B, n, T, cut, generator=gen, dtype=torch.float64).displacement()
    sq = d.pow(2).sum(1)  # [B, n, n]
    got = sq[:, n // 2, n // 2] if where == "centre" else sq.mean((1, 2))
    expected = mean_squared_displacement(T, cut, n, where)
    # |d|^2 at a site is a weighted chi-square; its standard error over B samples is < 2 E / sqrt(B).
    assert got.mean().item() == pytest.approx(expected, rel=5 * 2 / math.sqrt(B))


def test_per_sample_fields_are_independent(gen):
    f = sample_fields(4000, 16, 1e-3, 3, generator=gen, dtype=torch.float64)
    c = f.coeffs.flatten(1)  # [B, modes]
    a, b = c[0::2, 0], c[1::2, 0]  # same mode, neighbouring samples
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(corr.item()) < 5 / math.sqrt(len(a))
    u, v = f.coeffs[:, 0].flatten(1), f.coeffs[:, 1].flatten(1)  # x and y components
    corr_uv = torch.corrcoef(torch.stack([u[:, 0], v[:, 0]]))[0, 1]
    assert abs(corr_uv.item()) < 5 / math.sqrt(len(u))


# ------------------------------------------------------------------ invertibility
@pytest.mark.parametrize("cut", [3, 5])
def test_no_overhangs_below_t_max_and_overhangs_above(cut, gen):
    _, tmax = temperature_range(32, cut)
    frac = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for factor in (0.5, 1.0, 4.0):
            f = sample_fields(1000, 32, factor * tmax, cut, generator=gen, dtype=torch.float64)
            frac[factor] = (jacobian_determinant(f).flatten(1).min(1).values > 0).double().mean()
    # Measured here: ~95 % invertible at T_max / 2, ~62 % at T_max, ~2 % at 4 T_max.
    assert frac[0.5] > 0.9 and frac[1.0] > 0.5 and frac[4.0] < 0.1


def test_jacobian_matches_finite_differences(gen):
    f = sample_fields(2, (200, 200), 5e-3, 4, generator=gen, dtype=torch.float64)
    d = f.displacement()
    # Central differences of p -> p - d(p) in pixel units.
    gx = torch.gradient(-d, dim=3)[0]  # d/dx of -(dx, dy)
    gy = torch.gradient(-d, dim=2)[0]
    det = (1 + gx[:, 0]) * (1 + gy[:, 1]) - gy[:, 0] * gx[:, 1]
    J = jacobian_determinant(f)
    # Central differences err by O((k pi / n)^2 / 6) ~ 1e-3 relative here.
    assert torch.allclose(J[:, 2:-2, 2:-2], det[:, 2:-2, 2:-2], atol=3e-3)


# ------------------------------------------------------------------ applying
def test_zero_temperature_is_the_exact_identity(gen, dtype):
    x = torch.rand(3, 2, 11, 14, generator=gen, dtype=dtype)
    f = sample_fields(3, (11, 14), 0.0, 3, generator=gen, dtype=dtype)
    for interp in ("bilinear", "nearest", "gaussian"):
        assert torch.equal(apply(x, f, interp), x)
    # Mixed batch: the zero-temperature sample is exact, the others are deformed.
    fm = sample_fields(3, (11, 14), torch.tensor([0.0, 1e-2, 0.0]), 3, generator=gen, dtype=dtype)
    out = apply(x, fm)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2]) and not torch.equal(out[1], x[1])
    x1 = torch.rand(3, 2, 19, generator=gen, dtype=dtype)
    assert torch.equal(apply(x1, sample_fields(3, (19,), 0.0, 3, dtype=dtype)), x1)


def test_translation_moves_a_pattern_by_the_expected_pixels():
    x = torch.zeros(1, 1, 8, 10, dtype=torch.float64)
    x[0, 0, 3, 4] = 1.0
    d = torch.zeros(1, 2, 8, 10, dtype=torch.float64)
    d[:, 0], d[:, 1] = 2.0, -1.0  # 2 px right (+x), 1 px up (-y)
    y = warp(x, d)
    assert y[0, 0, 2, 6] == pytest.approx(1.0) and y.sum() == pytest.approx(1.0)
    # Half a pixel: bilinear splits the mass evenly; 1D likewise.
    d[:, 0], d[:, 1] = 0.5, 0.0
    y = warp(x, d)
    assert torch.allclose(y[0, 0, 3, 4:6], torch.tensor([0.5, 0.5], dtype=torch.float64))
    s = torch.zeros(1, 1, 9, dtype=torch.float64)
    s[..., 2] = 1
    assert warp(s, torch.full((1, 1, 9), 3.0, dtype=torch.float64))[0, 0].argmax() == 5


@pytest.mark.parametrize("interp", ["bilinear", "gaussian"])
def test_apply_matches_the_brute_force_reference(interp, gen):
    H, W = 9, 12
    x = torch.rand(3, 2, H, W, generator=gen, dtype=torch.float64)
    f = sample_fields(3, (H, W), 2e-2, 4, generator=gen, dtype=torch.float64)  # large: clamps too
    d = f.displacement()
    ref = torch.stack([reference_remap(x[b], d[b, 0], d[b, 1], interp) for b in range(3)])
    tol = 1e-12  # the Gaussian window drops weights < 1.6e-9 relative, ~1e-16 here
    assert torch.allclose(apply(x, f, interp), ref, atol=tol)


def test_nearest_picks_the_rounded_source_pixel(gen):
    x = torch.rand(2, 1, 10, 10, generator=gen, dtype=torch.float64)
    f = sample_fields(2, 10, 5e-3, 3, generator=gen, dtype=torch.float64)
    d = f.displacement()
    yy, xx = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
    sx = (xx - d[:, 0]).clamp(0, 9).round().long()
    sy = (yy - d[:, 1]).clamp(0, 9).round().long()
    ref = torch.stack([x[b, 0, sy[b], sx[b]] for b in range(2)])[:, None]
    assert torch.equal(apply(x, f, "nearest"), ref)


def test_apply_agrees_with_warp_of_the_displacement_and_1d_with_2d(gen):
    x = torch.rand(4, 3, 10, 15, generator=gen, dtype=torch.float64)
    f = sample_fields(4, (10, 15), 3e-3, 4, generator=gen, dtype=torch.float64)
    assert torch.allclose(apply(x, f), warp(x, f.displacement()), atol=1e-12)
    s = torch.rand(4, 2, 30, generator=gen, dtype=torch.float64)
    f1 = sample_fields(4, (30,), 3e-3, 4, generator=gen, dtype=torch.float64)
    out = apply(s, f1)
    # A 1D warp equals the 2D warp of a two-row image displaced along x only.
    d2 = torch.zeros(4, 2, 2, 30, dtype=torch.float64)
    d2[:, 0] = f1.displacement()[:, 0, None, :]
    ref = warp(s[:, :, None].expand(-1, -1, 2, -1), d2)[:, :, 0]
    assert torch.allclose(out, ref, atol=1e-12)


def test_one_field_is_shared_across_leading_dims(gen):
    f = sample_fields(1, 16, 2e-3, 3, generator=gen, dtype=torch.float64)
    x = torch.rand(5, 3, 16, 16, generator=gen, dtype=torch.float64)
    out = apply(x, f)
    assert torch.allclose(out[2], apply(x[2:3], f)[0])
    assert apply(x[0], f).shape == (3, 16, 16)  # a single [C, H, W] image


def test_same_generator_state_replays_bit_identical_outputs(dtype):
    x = torch.rand(6, 3, 16, 16, dtype=dtype)
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        outs.append(apply(x, sample_fields(6, 16, 2e-3, 3, generator=g, dtype=dtype)))
    assert torch.equal(outs[0], outs[1])
    # ... and the coefficients do not depend on the dtype asked for.
    a = sample_fields(2, 16, 2e-3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    b = sample_fields(2, 16, 2e-3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(a.coeffs, b.coeffs.float())


def test_keeps_device_and_dtype(device, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, dtype=dtype, device=device)
    f = sample_fields(2, 8, 1e-3, 3, generator=g, dtype=dtype, device=device)
    for interp in ("bilinear", "nearest", "gaussian"):
        y = apply(x, f, interp)
        assert y.dtype == dtype and y.device == x.device and y.shape == x.shape


def test_gradients_flow_to_the_image(gen):
    x = torch.rand(2, 1, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    f = sample_fields(2, (6, 7), 5e-3, 3, generator=gen, dtype=torch.float64)
    for interp in ("bilinear", "gaussian"):
        assert torch.autograd.gradcheck(lambda z, m=interp: apply(z, f, m), (x,))
    s = torch.rand(2, 1, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    f1 = sample_fields(2, (9,), 5e-3, 3, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: apply(z, f1), (s,))


def test_fields_slice_and_move(gen):
    f = sample_fields(5, 8, 1e-3, torch.tensor([2, 3, 3, 4, 2]), generator=gen)
    sub = f[1:3]
    assert isinstance(sub, DiffeoFields) and sub.batch_size == 2 and sub.cut.tolist() == [3, 3]
    assert f[4].batch_size == 1 and f.to(dtype=torch.float64).coeffs.dtype == torch.float64


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(T=-1e-3), "T must be >= 0"),
        (dict(cut=0), "cut must be an integer >= 1"),
        (dict(cut=2.5), "cut must be an integer >= 1"),
        (dict(T=float("nan")), "T must be finite"),
        (dict(T=torch.ones(3)), r"shape \[4\]"),
        (dict(size=(1, 5)), "every side >= 2"),
        (dict(size=(4, 4, 4)), "size must be"),
    ],
)
def test_sampling_rejects_bad_input(kwargs, match):
    args = dict(batch=4, size=8, T=1e-3, cut=3) | kwargs
    with pytest.raises(ValueError, match=match):
        sample_fields(**args)


def test_apply_rejects_bad_input(gen):
    f = sample_fields(2, 8, 1e-3, 3, generator=gen)
    with pytest.raises(ValueError, match="floating-point"):
        apply(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), f)
    with pytest.raises(ValueError, match="does not match fields"):
        apply(torch.zeros(2, 3, 9, 8), f)
    with pytest.raises(ValueError, match="does not match fields"):
        apply(torch.zeros(8, 8), f)
    with pytest.raises(ValueError, match="batch 3"):
        apply(torch.zeros(3, 1, 8, 8), f)
    with pytest.raises(ValueError, match="interp must be"):
        apply(torch.zeros(2, 1, 8, 8), f, "cubic")
    with pytest.raises(ValueError, match="cut > 1"):
        temperature_range(32, 1)


def test_warns_outside_the_natural_range():
    tmin, tmax = temperature_range(16, 3)
    with pytest.warns(UserWarning, match="natural range"):
        sample_fields(2, 16, 2 * tmax, 3)
    with pytest.warns(UserWarning, match="natural range"):
        sample_fields(2, 16, tmin / 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_fields(2, 16, (tmin * tmax) ** 0.5, 3)
        sample_fields(2, 16, 0.0, 3)  # the identity is always fine


# ------------------------------------------------------------------ module
def test_diffeo_module_draws_in_the_natural_range_and_replays():
    aug = Diffeo(cut=(2, 6), generator=torch.Generator().manual_seed(0))
    x = torch.rand(300, 1, 16, 16)
    y = aug(x)
    p = aug.last_params
    assert set(p.cut.tolist()) == {2, 3, 4, 5, 6}
    tmin, tmax = temperature_range(16, p.cut.double())
    assert torch.all((p.T >= tmin) & (p.T <= tmax))
    assert torch.equal(aug(x, params=p), y)
    fixed = Diffeo(cut=3, T=1e-3)(torch.rand(3, 8, 8))  # a single image, torchvision style
    assert fixed.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="natural temperature range needs cut >= 2"):
        Diffeo(cut=1)


def test_diffeo_module_beta_law_concentrates_T():
    aug = Diffeo(cut=3, T_beta=(50.0, 50.0), generator=torch.Generator().manual_seed(0))
    p = aug.generate_parameters(torch.rand(500, 1, 16, 16))
    tmin, tmax = temperature_range(16, 3)
    u = (p.T - tmin) / (tmax - tmin)
    assert abs(u.mean().item() - 0.5) < 0.01 and u.std().item() < 0.06  # Beta(50, 50): sd 0.05


def test_zero_coefficients_build_the_identity_grid_bit_for_bit(dtype):
    from diffeosense.diffeo import _grid_2d, _identity_grid

    for H, W in ((8, 8), (13, 31), (32, 32)):
        grid = _grid_2d(torch.zeros(3, 2, 4, 4, dtype=dtype), H, W)
        assert torch.equal(grid, _identity_grid(H, W, dtype, torch.device("cpu")).view(1, H, W, 2).expand(3, -1, -1, -1))


def test_scalar_and_per_sample_arguments_draw_identical_fields():
    T = temperature_for_displacement(1.0, 3, 32)
    a = sample_fields(5, 32, T, 3, generator=torch.Generator().manual_seed(0))
    b = sample_fields(5, 32, torch.full((5,), T, dtype=torch.float64), torch.full((5,), 3),
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.coeffs, b.coeffs) and torch.equal(a.T, b.T) and torch.equal(a.cut, b.cut)


@pytest.mark.parametrize("size", [32, (24,)])
def test_scalar_path_checks_and_warns_as_the_per_sample_path(size):
    # The scalar fast path validates on Python numbers and caches its table of standard
    # deviations: same draws (1D too), same errors, and the warning at every call.
    T = 1e-3
    a = sample_fields(4, size, T, 3, generator=torch.Generator().manual_seed(1))
    b = sample_fields(4, size, torch.full((4,), T, dtype=torch.float64), torch.full((4,), 3),
                      generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.coeffs, b.coeffs)
    for args in ((1.0, 3), (torch.full((2,), 1.0), torch.full((2,), 3))):
        for _ in range(2):
            with pytest.warns(UserWarning, match="outside the natural range"):
                sample_fields(2, size, *args)
    with pytest.raises(ValueError, match="T must be >= 0"):
        sample_fields(2, size, -1e-3, 3)
    with pytest.raises(ValueError, match="cut must be an integer"):
        sample_fields(2, size, 1e-3, 2.5)
    with pytest.raises(ValueError, match="finite"):
        sample_fields(2, size, float("nan"), 3)
