"""Tests of diffeosense.theory: closed-form moments, exact sensitivities of the idealized net
(against explicit conv layers and Monte Carlo), and the predicted laws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import ndtr

from diffeosense.theory import (
    asymptotic_sensitivities,
    bivariate_normal_cdf,
    fit_exponent,
    homogeneous_pooling_net,
    local_exponents,
    pooling_sensitivities,
    pooling_sensitivities_mc,
    predicted_exponents,
    relu_bivariate_moment,
    relu_gaussian_moments,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """The idealized net has one channel: threads only add contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- closed-form Gaussian moments


def _phi(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (1.3, 0.7), (-2.0, 1.5), (25.0, 1.0)])
def test_relu_gaussian_moments_vs_quadrature(mu, sigma):
    lo, hi = max(0.0, mu - 15 * sigma), max(0.0, mu + 15 * sigma)

    def moment(p):
        f = lambda u: u**p * _phi((u - mu) / sigma) / sigma  # noqa: E731
        return integrate.quad(f, lo, hi, epsabs=1e-14, epsrel=1e-13, limit=200)[0]

    m1, m2 = moment(1), moment(2)
    m, v = relu_gaussian_moments(mu, sigma)
    assert m == pytest.approx(m1, abs=1e-10)
    assert v == pytest.approx(m2 - m1 * m1, abs=1e-8 * max(1, mu * mu))


def _bivariate_by_quadrature(mu1, mu2, s1, s2, rho):
    """E[relu(U) relu(V)] = int_{u>0} u p(u) E[relu(V) | u] du (inner mean in closed form)."""
    r = math.sqrt(1 - rho * rho)

    def integrand(x):
        m, s = mu2 + s2 * rho * x, s2 * r
        a = m / s
        return (mu1 + s1 * x) * _phi(x) * s * (_phi(a) + a * ndtr(a))

    return integrate.quad(integrand, -mu1 / s1, np.inf, epsabs=1e-14, epsrel=1e-12)[0]


@pytest.mark.parametrize(
    "mu1,mu2,s1,s2,rho",
    [(0, 0, 1, 1, 0.5), (0, 1.2, 1, 0.8, -0.4), (2.0, -1.0, 0.6, 1.4, 0.9),
     (-1.5, -0.3, 1.1, 0.9, 0.2), (9.0, 0.0, 1.0, 1.0, 0.66)],
)
def test_relu_bivariate_moment_vs_quadrature(mu1, mu2, s1, s2, rho):
    got = float(relu_bivariate_moment(mu1, mu2, s1, s2, rho))
    assert got == pytest.approx(_bivariate_by_quadrature(mu1, mu2, s1, s2, rho), abs=1e-11)


@pytest.mark.parametrize("h,k", [(0.3, -1.1), (0.0, 0.7), (-0.8, 0.0), (0.0, 0.0), (-1.2, -0.4)])
@pytest.mark.parametrize("rho", [-0.7, 0.1, 0.95])
def test_bivariate_normal_cdf_vs_quadrature(h, k, rho):
    r = math.sqrt(1 - rho * rho)
    ref = integrate.quad(lambda x: _phi(x) * ndtr((k - rho * x) / r), -np.inf, h, epsabs=1e-15)[0]
    assert float(bivariate_normal_cdf(h, k, rho)) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------- brute force: explicit layers


def _explicit_reference(depth, F, s, n, A, noise):
    """D, G numerators and the denominator by brute force on the explicit homogeneous net.

    Every probe x_i = A e_i goes through the nn.Conv1d layers; the denominator is the mean of
    ||f_i - f_j||^2 over all N^2 ordered pairs (cdist). For the noise, the layer-1 output h is
    described by its exact first and second moments (dense N1 x N1 matrices built pair by pair
    from the closed-form Gaussian moments, the noise covariance from the explicit conv matrix);
    E||L(h - c)||^2 = ||L(m - c)||^2 + tr(L C L^T), with L the matrix of the explicit layers
    2..k (obtained by pushing every basis vector through them).
    """
    net = homogeneous_pooling_net(depth, F, s)
    mods = list(net.features.children())
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)
    sigma2 = 2 * A * A / n

    def layers(u, first, last):
        for j in range(first, last):
            u = mods[2 * j + 1](mods[2 * j](u))
        return u.flatten(1)

    d_num, den, g_num = [], [], []
    for k in range(1, depth + 1):
        f, ft = layers(A * eye, 0, k), layers(A * torch.roll(eye, 1, dims=2), 0, k)
        d_num.append((ft - f).pow(2).sum(1).mean().item())
        den.append(torch.cdist(f, f).pow(2).mean().item())
    W1 = mods[0](eye).flatten(1).T.numpy()  # [N1, N]: the first convolution as a matrix
    n1 = W1.shape[0]
    cov_g = sigma2 * W1 @ W1.T
    sd = np.sqrt(np.diag(cov_g))
    corr = cov_g / np.outer(sd, sd)
    basis = torch.eye(n1, dtype=torch.float64).unsqueeze(1)
    for k in range(1, depth + 1):
        if noise == "rectified":
            # eta >= 0 enters the (then linear) net: E||M eta||^2 with M the k-layer matrix.
            mu, v = relu_gaussian_moments(0.0, math.sqrt(2 * sigma2))
            Mk = layers(eye, 0, k).T.numpy()
            mean_vec = Mk @ np.full(n, float(mu))
            g_num.append(mean_vec @ mean_vec + float(v) * np.sum(Mk**2))
            continue
        Lk = layers(basis, 1, k).T.numpy()  # [N_k, N1]
        total = 0.0
        for i in range(n):
            c = A * W1[:, i]
            m, var = relu_gaussian_moments(c, sd)
            second = np.outer(m, m)
            for a in range(n1):
                second[a, a] = var[a] + m[a] ** 2
                for b in range(n1):
                    if a != b and corr[a, b] != 0:
                        second[a, b] = relu_bivariate_moment(c[a], c[b], sd[a], sd[b], corr[a, b])
            C = second - np.outer(m, m)
            u = Lk @ (m - c)
            total += u @ u + np.trace(Lk @ C @ Lk.T)
        g_num.append(total / n)
    return np.array(d_num), np.array(g_num), np.array(den)


@pytest.mark.parametrize(
    "depth,F,s,n",
    [(6, 3, 1, 30), (5, 3, 1, 14), (4, 2, 1, 16), (4, 2, 2, 32), (2, 3, 3, 27)],
)
@pytest.mark.parametrize("noise", ["gaussian", "rectified"])
def test_exact_matches_explicit_layers(depth, F, s, n, noise):
    A = 1.7
    res = pooling_sensitivities(depth, F, s, n=n, amplitude=A, noise=noise)
    d_num, g_num, den = _explicit_reference(depth, F, s, n, A, noise)
    np.testing.assert_allclose(res.d_num, d_num, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.den, den, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.g_num, g_num, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.R, res.D / res.G, rtol=1e-12)


def test_denominator_convention():
    a = pooling_sensitivities(5, 3, 1, n=40)
    b = pooling_sensitivities(5, 3, 1, n=40, include_diag=False)
    np.testing.assert_allclose(b.den, a.den * 40 / 39, rtol=1e-12)
    np.testing.assert_allclose(b.R, a.R, rtol=1e-12)


def test_amplitude_drops_out_for_relu():
    a = pooling_sensitivities(8, 3, 1, n=50, amplitude=1.0)
    b = pooling_sensitivities(8, 3, 1, n=50, amplitude=123.0)
    for q in ("D", "G", "R"):
        np.testing.assert_allclose(getattr(a, q), getattr(b, q), rtol=1e-9)


# ---------------------------------------------------------------- exact vs Monte Carlo


@pytest.mark.parametrize("depth,F,s,n", [(10, 3, 1, 48), (5, 2, 2, 64)])
@pytest.mark.parametrize("noise", ["gaussian", "rectified"])
def test_exact_vs_monte_carlo(depth, F, s, n, noise):
    ex = pooling_sensitivities(depth, F, s, n=n, noise=noise)
    g = torch.Generator().manual_seed(12)
    mc = pooling_sensitivities_mc(depth, F, s, n=n, noise=noise, n_samples=6000, generator=g)
    np.testing.assert_allclose(mc.D, ex.D, rtol=1e-10)  # deterministic in both
    np.testing.assert_allclose(mc.den, ex.den, rtol=1e-10)
    z = (mc.G - ex.G) / mc.g_err
    assert np.all(np.abs(z) < 4.5), z


def test_sphere_noise_close_to_iid_gaussian():
    """Per-sample norm matching differs from i.i.d. noise by O(1/N) only."""
    ex = pooling_sensitivities(6, 3, 1, n=128)
    g = torch.Generator().manual_seed(3)
    mc = pooling_sensitivities_mc(6, 3, 1, n=128, noise="sphere", n_samples=3000, generator=g)
    assert np.all(np.abs(mc.G / ex.G - 1) < 0.03 + 4 * mc.g_err / ex.G)


def test_monte_carlo_is_reproducible():
    kw = dict(depth=4, filter_size=2, stride=1, n=32, n_samples=300)
    a = pooling_sensitivities_mc(**kw, generator=torch.Generator().manual_seed(5))
    b = pooling_sensitivities_mc(**kw, generator=torch.Generator().manual_seed(5))
    c = pooling_sensitivities_mc(**kw, generator=torch.Generator().manual_seed(6))
    np.testing.assert_array_equal(a.G, b.G)
    assert not np.array_equal(a.G, c.G)


# ---------------------------------------------------------------- laws at large depth


def test_no_stride_laws_at_large_depth():
    """s = 1, F = 3, k up to 1000 on a long circle: D ~ k^-1, G ~ k^(1/2), R ~ k^(-3/2)."""
    res = pooling_sensitivities(1000, 3, 1, n=2**20)
    pred = predicted_exponents(1)
    fits = {q: fit_exponent(res.k, getattr(res, q), "power", k_min=300) for q in "DGR"}
    # D converges fast (corrections O(1/k)); G = a sqrt(k) + b with b/a ~ 2, so the local
    # slope is 0.5 a sqrt(k) / (a sqrt(k) + b): ~0.46 over [300, 1000] (docs/theory.md).
    assert abs(fits["D"].slope - pred["D"]) < 0.01
    assert abs(fits["G"].slope - pred["G"]) < 0.06
    assert abs(fits["R"].slope - pred["R"]) < 0.06
    # The pile-up part of G alone has the predicted exponent sharply.
    pile = fit_exponent(res.k, res.g_num_mean / res.den, "power", k_min=300)
    assert abs(pile.slope - 0.5) < 0.005
    # The closed forms with their constants match the exact curves.
    asym = asymptotic_sensitivities(res.k, 3, 1)
    big = res.k >= 300
    for q in "DGR":
        np.testing.assert_allclose(getattr(res, q)[big], asym[q][big], rtol=5e-3)
    # ... and the agreement improves with depth (it is an asymptote, not a fit).
    err = np.abs(res.D / asym["D"] - 1)
    assert err[999] < err[99] < err[9]


def test_stride_laws():
    """s = F = 2: D = 2^-k / (1 - 2^k/N) exactly, G ~ 2^k, R ~ 4^-k."""
    n = 2**22  # large, so that the finite-circle factor 1 - 2^k / N stays near 1
    res = pooling_sensitivities(12, 2, 2, n=n)
    k = res.k
    np.testing.assert_allclose(res.D, 2.0**-k / (1 - 2.0**k / n), rtol=1e-12)
    pred = predicted_exponents(2)
    fits = {q: fit_exponent(k, getattr(res, q), "exponential", k_min=6) for q in "DGR"}
    assert abs(fits["D"].slope - pred["D"]) < 1e-3
    assert abs(fits["G"].slope - pred["G"]) < 0.02
    assert abs(fits["R"].slope - pred["R"]) < 0.02
    asym = asymptotic_sensitivities(k, 2, 2)
    np.testing.assert_allclose(res.G, asym["G"], rtol=0.05)
    np.testing.assert_allclose(res.G[:8], asym["G"][:8], rtol=5e-3)


def test_tanh_has_no_pile_up():
    """Small amplitude tanh: G stays ~1 (flat); the same ReLU net's G grows."""
    kw = dict(depth=16, filter_size=2, stride=2 - 1, n=96, amplitude=0.05, n_samples=1500)
    tanh = pooling_sensitivities_mc(**kw, activation="tanh",
                                    generator=torch.Generator().manual_seed(0))
    relu = pooling_sensitivities(16, 2, 1, n=96)
    assert abs(fit_exponent(tanh.k, tanh.G, "power", k_min=4).slope) < 0.1
    np.testing.assert_allclose(tanh.G, 1.0, atol=0.15)
    assert relu.G[-1] / relu.G[0] > 1.5
    assert predicted_exponents(1, "tanh")["G"] == 0.0


# ---------------------------------------------------------------- fits and predictions


def test_fit_exponent_recovers_noisy_power_law():
    g = np.random.default_rng(0)
    k = np.arange(1, 60)
    y = 3.0 * k**-0.7 * np.exp(0.05 * g.standard_normal(k.size))
    fit = fit_exponent(k, y, "power")
    assert abs(fit.slope + 0.7) < 4 * fit.stderr
    assert 0 < fit.stderr < 0.05
    fit2 = fit_exponent(k, y, "power", k_min=10, k_max=40)
    assert fit2.n_points == 31 and fit2.k_min == 10 and fit2.k_max == 40


def test_fit_exponent_exponential_and_weights():
    k = np.arange(1, 11)
    y = 0.5 * 4.0**-k
    fit = fit_exponent(k, y, "exponential")
    assert fit.base == pytest.approx(0.25, rel=1e-12)
    # A wild point with a huge error bar barely moves a weighted fit.
    y2 = y.copy()
    y2[5] *= 10
    err = y * 1e-3
    err[5] = y2[5] * 1e3
    assert fit_exponent(k, y2, "exponential", errors=err).slope == pytest.approx(
        -math.log(4), abs=1e-6
    )
    assert abs(fit_exponent(k, y2, "exponential").slope + math.log(4)) > 1e-3


@pytest.mark.parametrize(
    "kwargs,msg",
    [(dict(k=[1, 2], values=[1.0, -1.0]), "positive"), (dict(k=[1], values=[1.0]), "2 points"),
     (dict(k=[1, 2], values=[1.0, 2.0], law="linear"), "law")],
)
def test_fit_exponent_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        fit_exponent(**kwargs)


def test_predicted_exponents_and_asymptotes_agree():
    for stride, law in ((1, "power"), (2, "exponential"), (3, "exponential")):
        pred = predicted_exponents(stride)
        assert pred["law"] == law
        k = np.arange(10**6, 10**6 + 3) if stride == 1 else np.arange(30, 33)
        asym = asymptotic_sensitivities(k, 3 if stride == 1 else stride, stride)
        for q in "DGR":
            _, slopes = local_exponents(k, asym[q], law)
            assert slopes[-1] == pytest.approx(pred[q], abs=0.03)


@pytest.mark.parametrize(
    "kwargs,msg",
    [(dict(depth=3, filter_size=3, stride=2, n=64), "stride"),
     (dict(depth=3, filter_size=2, stride=2, n=12), "multiple"),
     (dict(depth=3, filter_size=3, stride=1, n=4), "too small"),
     (dict(depth=3, filter_size=3, stride=1, n=32, noise="sphere"), "monte_carlo|mc")],
)
def test_bad_input(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        pooling_sensitivities(**kwargs)


def test_exponents_tie_together():
    """docs/theory.md, correction 1: on the same window, the fitted exponents of D, G and R are
    those of their numerators minus the denominator's (least squares on logs is linear), and
    the denominator's exponent without stride is -1/2 (F = 3, k in [100, 1000])."""
    res = pooling_sensitivities(depth=1000, filter_size=3, stride=1, n=2**20, amplitude=1.0)
    slope = {q: fit_exponent(res.k, getattr(res, q), "power", k_min=100, k_max=1000).slope
             for q in ("d_num", "g_num", "den", "D", "G", "R")}
    assert slope["D"] == pytest.approx(slope["d_num"] - slope["den"], abs=1e-9)
    assert slope["G"] == pytest.approx(slope["g_num"] - slope["den"], abs=1e-9)
    assert slope["R"] == pytest.approx(slope["D"] - slope["G"], abs=1e-9)
    assert slope["den"] == pytest.approx(-0.5, abs=0.01)  # not -0.514
    assert slope["d_num"] == pytest.approx(-1.5, abs=0.01)
    assert slope["D"] == pytest.approx(-1.0, abs=0.01)
