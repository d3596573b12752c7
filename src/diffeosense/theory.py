r"""Sensitivities of a pure spatial-pooling net versus depth: exact values and their laws.

The idealized net (science.md §5; :func:`~diffeosense.models.cnn1d.homogeneous_pooling_net`):
one channel, ``K`` layers ``h_k = act(W h_{k-1})``, every filter entry ``w = s / F`` (filter
size F, stride s in {1, F}), no bias, circular boundary ('same' padding for s = 1, aligned
blocks for s = F). Probes: one active pixel ``x_i = A e_i`` at every position i = 0..N-1 (the
probe set is all N positions). Diffeo: the shift by one pixel, ``tau x_i = x_{i+1 mod N}``.
Noise: norm-matched to the shift, ``E||eta||^2 = ||tau x - x||^2 = 2 A^2``.

With the definitions of science.md §1, at layer k (the output of the k-th activation),

    D_k = E_i ||f_k(x_{i+1}) - f_k(x_i)||^2      / E_{i,j} ||f_k(x_i) - f_k(x_j)||^2
    G_k = E_{i,eta} ||f_k(x_i + eta) - f_k(x_i)||^2 / E_{i,j} ||f_k(x_i) - f_k(x_j)||^2
    R_k = D_k / G_k

(denominator over all ordered pairs including i = j, i.e. ``2 sum_j Var_i f_k(x_i)_j``; with
``include_diag=False`` it is multiplied by ``N / (N - 1)``, which cancels in R).

Noise models (``noise=``):

* ``"gaussian"``: i.i.d. ``eta_j ~ N(0, sigma^2)``, ``sigma^2 = ||tau x - x||^2 / N``, added to
  the input; the first ReLU rectifies it. Exact: after layer 1 each site is a rectified
  Gaussian ``relu(c_j + g_j)``, whose means and covariances are closed forms (bivariate normal
  orthant moments, via Owen's T); layers 2..k are linear on non-negative inputs, so
  ``E||L (h - c)||^2 = ||L (m - c)||^2 + tr(L C L^T)`` propagates exactly. This is the engine's
  ``matched_noise(match="batch")``: every probe has the same ``||tau x - x||``.
* ``"rectified"``: i.i.d. ``eta_j = sqrt(2) sigma relu(xi_j)`` (non-negative noise, same second
  moment; ``matched_noise(match="batch", rectify=True)``); the whole net is then linear.
* ``"sphere"``, ``"rectified-sphere"``: the same directions scaled per sample to
  ``||eta|| = ||tau x - x||`` exactly (``match="sample"``); Monte-Carlo only. They differ from
  the i.i.d. versions by O(1/N).

Leading behaviour (derived in docs/theory.md; :func:`asymptotic_sensitivities`), N -> infinity:

* s = 1, ReLU: the response to one pixel is the k-fold self-convolution ``p_k`` of the box
  filter, a Gaussian of variance ``V = k (F^2 - 1) / 12``. Then ``||p_k||^2 ~ (4 pi V)^(-1/2)``,
  ``||p_k(. + 1) - p_k||^2 ~ (16 pi V^3)^(-1/2)`` and the rectified noise keeps a mean
  ``mu = sigma_1 / sqrt(2 pi)`` at every site, so

      D_k -> 1 / (4 V) = 3 / ((F^2 - 1) k)                            (~ k^-1)
      G_k -> sqrt(V / pi) / F + b_F,  b_F = (1/F) sum_{|d|<F} kappa(1 - |d|/F)   (~ k^(1/2))
      R_k -> D_k / G_k                                                 (~ k^(-3/2))

  with ``kappa(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho - 1) / (2 pi)``. Correction
  to the naive reading: the *denominator* also scales, as ``||p_k||^2 ~ k^(-1/2)``; the
  numerators alone go as ``k^(-3/2)`` (diffeo) and ``k^0`` (noise), and the ratio exponents
  -1 and +1/2 hold only with it. The constant ``b_F`` (0.31 for F = 3) makes the approach
  to ``k^(1/2)`` slow: a power-law fit over ``k in [100, 1000]`` gives about 0.44-0.47.
* s = F, ReLU: ``D_k = F^-k / (1 - F^k / N)`` exactly; ``G_k -> F^(k-1) / (2 pi) + 1/2 - 1/(2 pi)``;
  ``R_k -> 2 pi F^(1-2k)``: slopes ``-ln F``, ``+ln F``, ``-2 ln F`` per layer (2^-k, 2^k, 4^-k
  for F = 2). The denominator is constant here.
* tanh (small amplitude, where tanh is nearly linear): the noise stays centred (odd function
  of a symmetric input), no pile-up: ``G_k -> 1`` (flat) and ``R_k ~ D_k``.

>>> res = pooling_sensitivities(depth=6, filter_size=2, stride=2, n=256)
>>> [round(float(d * 2**k * (1 - 2**k / 256)), 12) for k, d in zip(res.k, res.D)]
[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
>>> fit = fit_exponent(res.k, res.G, law="exponential", k_min=3)
>>> abs(fit.slope - predicted_exponents(2)["G"]) < 0.1
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.special import ndtr, owens_t

from .models.cnn1d import homogeneous_pooling_net

__all__ = [
    "PoolingSensitivities",
    "ExponentFit",
    "pooling_sensitivities",
    "pooling_sensitivities_mc",
    "asymptotic_sensitivities",
    "predicted_exponents",
    "fit_exponent",
    "local_exponents",
    "relu_gaussian_moments",
    "relu_bivariate_moment",
    "bivariate_normal_cdf",
    "homogeneous_pooling_net",
    "default_n",
]

NOISES = ("gaussian", "rectified", "sphere", "rectified-sphere")
_EXACT_NOISES = ("gaussian", "rectified")
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------- Gaussian moments of ReLU


def _phi(x):
    return _INV_SQRT_2PI * np.exp(-0.5 * np.square(x))


def relu_gaussian_moments(mu, sigma):
    """Mean and variance of ``relu(U)``, ``U ~ N(mu, sigma^2)`` (elementwise, sigma > 0).

    ``E relu(U) = sigma (phi(a) + a Phi(a))``, ``E relu(U)^2 = sigma^2 ((1 + a^2) Phi(a) + a phi(a))``
    with ``a = mu / sigma``.

    >>> m, v = relu_gaussian_moments(0.0, 1.0)
    >>> round(float(m), 6), round(float(v), 6)   # 1/sqrt(2 pi), 1/2 - 1/(2 pi)
    (0.398942, 0.340845)
    """
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    a = mu / sigma
    m = sigma * (_phi(a) + a * ndtr(a))
    m2 = sigma**2 * ((1 + a * a) * ndtr(a) + a * _phi(a))
    return m, m2 - m * m


def _relu_mean_minus_mu(mu, sigma):
    """``E relu(U) - mu`` without cancellation: ``sigma (phi(a) - a Phi(-a))``."""
    a = mu / sigma
    return sigma * (_phi(a) - a * ndtr(-a))


def bivariate_normal_cdf(h, k, rho):
    """``P(X < h, Y < k)`` for standard normals with correlation ``|rho| < 1`` (elementwise).

    Owen (1956): ``1/2 Phi(h) + 1/2 Phi(k) - T(h, (k - rho h)/(h r)) - T(k, (h - rho k)/(k r))
    - beta`` with ``r = sqrt(1 - rho^2)``, ``beta = 1/2`` if ``hk < 0`` or (``hk = 0``,
    ``h + k < 0``), else 0; the limits at ``h = 0`` or ``k = 0`` are taken explicitly.

    >>> round(float(bivariate_normal_cdf(0.0, 0.0, 0.5)), 12)   # 1/4 + asin(rho) / (2 pi)
    0.333333333333
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (h, k, rho)))
    r = np.sqrt(1.0 - rho * rho)
    h0, k0 = h == 0, k == 0
    hs, ks = np.where(h0, 1.0, h), np.where(k0, 1.0, k)
    beta = np.where((h * k < 0) | ((h * k == 0) & (h + k < 0)), 0.5, 0.0)
    general = (
        0.5 * ndtr(h) + 0.5 * ndtr(k)
        - owens_t(h, (k - rho * h) / (hs * r)) - owens_t(k, (h - rho * k) / (ks * r)) - beta
    )
    only_h0 = 0.5 * ndtr(k) + owens_t(k, rho / r)
    only_k0 = 0.5 * ndtr(h) + owens_t(h, rho / r)
    both0 = 0.25 + np.arcsin(rho) / (2 * math.pi)
    return np.where(h0 & k0, both0, np.where(h0, only_h0, np.where(k0, only_k0, general)))


def relu_bivariate_moment(mu1, mu2, s1, s2, rho):
    """``E[relu(U) relu(V)]`` for jointly Gaussian U, V (means mu, std s, correlation rho).

    With ``a = -mu1/s1``, ``b = -mu2/s2``, ``r = sqrt(1 - rho^2)``, ``L = P(X > a, Y > b)``
    (Stein's lemma on the truncated bivariate normal)::

        E = s1 s2 [ (rho + a b) L + r phi(a) phi((b - rho a)/r)
                    - b phi(a) Phi((rho a - b)/r) - a phi(b) Phi((rho b - a)/r) ]

    ``|rho| < 1`` (use :func:`relu_gaussian_moments` for rho = 1). At ``mu = 0`` this is the
    arc-cosine kernel ``s1 s2 (sin t + (pi - t) cos t) / (2 pi)``, ``cos t = rho``.

    >>> t = math.acos(0.3)
    >>> round(float(relu_bivariate_moment(0, 0, 1, 1, 0.3)), 12) == round(
    ...     (math.sin(t) + (math.pi - t) * 0.3) / (2 * math.pi), 12)
    True
    """
    mu1, mu2, s1, s2, rho = (np.asarray(v, dtype=np.float64) for v in (mu1, mu2, s1, s2, rho))
    a, b = -mu1 / s1, -mu2 / s2
    r = np.sqrt(1.0 - rho * rho)
    L = bivariate_normal_cdf(-a, -b, rho)
    P = ndtr((rho * a - b) / r)
    Q = ndtr((rho * b - a) / r)
    Z = _phi(a) * _phi((b - rho * a) / r)
    return s1 * s2 * ((rho + a * b) * L + r * Z - b * _phi(a) * P - a * _phi(b) * Q)


# ---------------------------------------------------------------- exact sensitivities


@dataclass
class PoolingSensitivities:
    """Sensitivities of the idealized net at depths ``k = 1..K`` (arrays ``[K]``, float64).

    ``d_num = E||f(tau x) - f(x)||^2``, ``g_num = E||f(x + eta) - f(x)||^2``, ``den`` the
    pair denominator; ``D = d_num / den``, ``G = g_num / den``, ``R = D / G``.
    ``g_num_mean``: the part of ``g_num`` due to the mean of the noise increment,
    ``||E[f(x + eta) - f(x)]||^2`` (the pile-up; exact method only).
    ``g_err``, ``R_err``: Monte-Carlo standard errors (``None`` for the exact method).
    """

    k: np.ndarray
    D: np.ndarray
    G: np.ndarray
    R: np.ndarray
    d_num: np.ndarray
    g_num: np.ndarray
    den: np.ndarray
    g_num_mean: np.ndarray | None = None
    g_err: np.ndarray | None = None
    R_err: np.ndarray | None = None
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            key: (val.tolist() if isinstance(val, np.ndarray) else val)
            for key, val in asdict(self).items()
        }


def _check_net(depth: int, filter_size: int, stride: int, n: int) -> None:
    if depth < 1 or filter_size < 2:
        raise ValueError(f"need depth >= 1 and filter_size >= 2, got {depth}, {filter_size}")
    if stride not in (1, filter_size):
        raise ValueError(f"stride must be 1 or filter_size={filter_size}, got {stride}")
    if stride == 1 and n < 2 * filter_size:
        raise ValueError(f"n={n} is too small for filter_size={filter_size}: need n >= 2 F")
    if stride > 1 and (n % stride**depth or n // stride**depth < 2):
        raise ValueError(
            f"with stride {stride} and depth {depth}, n must be a multiple of {stride**depth} "
            f"with at least 2 sites left at the last layer (n >= {2 * stride**depth}); got n={n}"
        )


def default_n(depth: int, filter_size: int, stride: int) -> int:
    """A signal length large enough that the circle does not matter at depth ``depth``.

    s = 1: ``2^20`` (the exact computation costs O(K^2 F) whatever N: it only stores the
    support of the response); s = F: ``F^depth * 2^10``. Finite-N corrections are O(1/N) and
    O(F^k / N) respectively.
    """
    if stride == 1:
        return 2**20
    return filter_size**depth * 1024


def _same_conv(u: np.ndarray, filter_size: int, w: float) -> np.ndarray:
    """One circular 'same' layer on ``u: [..., N]``: ``out[j] = w sum_t u[j - pl + t]``,
    ``pl = (F - 1) // 2`` (torch's split for 'same' padding)."""
    pl = (filter_size - 1) // 2
    return w * sum(np.roll(u, pl - t, axis=-1) for t in range(filter_size))


def pooling_sensitivities(
    depth: int,
    filter_size: int = 2,
    stride: int = 1,
    n: int | None = None,
    amplitude: float = 1.0,
    noise: str = "gaussian",
    include_diag: bool = True,
) -> PoolingSensitivities:
    """Exact D_k, G_k, R_k of the idealized ReLU net, k = 1..depth (float64, closed forms).

    Args:
        depth: K, number of layers.
        filter_size: F.
        stride: 1 or F.
        n: signal length N (circular); default :func:`default_n`.
        amplitude: A, value of the active pixel (the ratios do not depend on it for ReLU).
        noise: ``"gaussian"`` or ``"rectified"`` (see the module docstring).
        include_diag: denominator over pairs including i = j (``2 sum Var``) or not.

    Every probe position is used: for s = 1 the circle makes all probes equivalent, so one
    probe is propagated (the kernel ``p_k``); for s = F the diffeo numerator counts the probes
    whose shift crosses a block edge, and the noise numerator is the same for every probe.

    Returns:
        :class:`PoolingSensitivities` with arrays ``[depth]``.
    """
    n = default_n(depth, filter_size, stride) if n is None else int(n)
    _check_net(depth, filter_size, stride, n)
    if noise not in _EXACT_NOISES:
        raise ValueError(
            f"exact noise models are {_EXACT_NOISES}; use pooling_sensitivities_mc for {noise!r}"
        )
    F, s, A = filter_size, stride, float(amplitude)
    w = s / F
    sigma2 = 2 * A * A / n  # ||tau x - x||^2 / N: the shift moves the pixel, ||.||^2 = 2 A^2
    if s == 1:
        out = _exact_stride1(depth, F, n, A, w, sigma2, noise)
    else:
        out = _exact_block(depth, F, n, A, w, sigma2, noise)
    d_num, g_num, g_mean, den = out
    if not include_diag:
        den = den * n / (n - 1)
    D, G = d_num / den, g_num / den
    config = dict(
        depth=depth, filter_size=F, stride=s, n=n, amplitude=A, noise=noise,
        include_diag=include_diag, activation="relu", method="exact",
    )
    return PoolingSensitivities(
        k=np.arange(1, depth + 1), D=D, G=G, R=D / G, d_num=d_num, g_num=g_num, den=den,
        g_num_mean=g_mean, config=config,
    )


def _exact_stride1(K, F, n, A, w, sigma2, noise):
    # Everything is computed on a circle of M <= N sites that holds the support of p_K (and of
    # the noise's local deviations) without wrapping; the N - M far sites, where the layer-1
    # noise is stationary, are added back in closed form. M = N when N is small: plain circle.
    M = min(n, (F - 1) * K + 4 * F)
    far = n - M
    delta0 = np.zeros(M)
    delta0[0] = 1.0
    deltas = np.arange(-(F - 1), F)
    if noise == "gaussian":
        # Layer 1: pre-activation c + g, c = A p_1, Cov(g_j, g_l) = sigma2 w^2 overlap(j - l).
        c = A * _same_conv(delta0, F, w)
        sg = math.sqrt(sigma2 * F) * w
        v = _relu_mean_minus_mu(c, sg)  # E h - c, = mu0 at the far sites
        mu0 = float(_relu_mean_minus_mu(0.0, sg))
        m = c + v
        # c_sum[d] = sum_j Cov(h_j, h_{j+d}) over the N sites (closed-form moments everywhere).
        c_sum = np.empty(len(deltas))
        for t, d in enumerate(deltas):
            if d == 0:
                cov, cov0 = relu_gaussian_moments(c, sg)[1], relu_gaussian_moments(0.0, sg)[1]
            else:
                rho = (F - abs(d)) / F
                cov = relu_bivariate_moment(c, np.roll(c, -d), sg, sg, rho) - m * np.roll(m, -d)
                cov0 = relu_bivariate_moment(0.0, 0.0, sg, sg, rho) - mu0 * mu0
            c_sum[t] = cov.sum() + far * float(cov0)
    else:
        mu, var = (float(t) for t in relu_gaussian_moments(0.0, math.sqrt(2 * sigma2)))
    d_num, den, g_num, g_mean = (np.empty(K) for _ in range(4))
    p = delta0  # the probe at position 0 through k layers: p_k
    q, vk = delta0, None  # kernel of layers 2..k (p_{k-1}) and L v
    for k in range(K):
        p = _same_conv(p, F, w)
        sq = p @ p
        d_num[k] = A * A * np.sum((np.roll(p, 1) - p) ** 2)
        den[k] = 2 * A * A * (sq - p.sum() ** 2 / n)
        if noise == "rectified":
            # Linear net on eta >= 0: E||L eta||^2 = mu^2 ||L 1||^2 + var ||L||_F^2, with
            # L 1 = 1 (the filter sums to F w = 1) and ||L||_F^2 = N ||p_k||^2.
            g_mean[k] = mu * mu * n
            g_num[k] = g_mean[k] + var * n * sq
            continue
        if k > 0:
            q = _same_conv(q, F, w)
        vk = v if k == 0 else _same_conv(vk, F, w)
        rho_q = np.array([q @ np.roll(q, -d) for d in deltas])
        # At the far sites L v = mu0 (the filter sums to F w = 1).
        g_mean[k] = vk @ vk + far * mu0 * mu0
        g_num[k] = g_mean[k] + c_sum @ rho_q
    return d_num, g_num, g_mean, den


def _exact_block(K, F, n, A, w, sigma2, noise):
    i = np.arange(n)
    d_num, den, g_num, g_mean = [], [], [], []
    n1 = n // F
    if noise == "gaussian":
        sg = math.sqrt(sigma2 * F) * w  # layer-1 windows are disjoint: independent sites
        c = np.zeros(n1)
        c[0] = A * w  # the probe at position 0 (every probe gives the same noise numerator)
        v = _relu_mean_minus_mu(c, sg)
        var = relu_gaussian_moments(c, sg)[1]
    else:
        mu, vv = relu_gaussian_moments(0.0, math.sqrt(2 * sigma2))
    for k in range(1, K + 1):
        block = F**k
        nk = n // block
        scale = A * A * w ** (2 * k)
        moved = (((i + 1) % n) // block) != (i // block)
        d_num.append(2 * scale * moved.mean())
        prob = np.bincount(i // block, minlength=nk) / n
        den.append(2 * scale * np.sum(prob * (1 - prob)))
        if noise == "gaussian":
            sums = v.reshape(nk, F ** (k - 1)).sum(1)
            mean_part = w ** (2 * (k - 1)) * (sums @ sums)
            g_mean.append(mean_part)
            g_num.append(mean_part + w ** (2 * (k - 1)) * var.sum())
        else:
            mean_part = float(mu) ** 2 * nk * (w * F) ** (2 * k)
            g_mean.append(mean_part)
            g_num.append(mean_part + float(vv) * n * w ** (2 * k))
    return np.array(d_num), np.array(g_num), np.array(g_mean), np.array(den)


# ---------------------------------------------------------------- Monte Carlo (any activation)


def _layer_outputs(net, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every activation of the homogeneous net, flattened ``[B, N_k]``."""
    outs = []
    for name, module in net.features.named_children():
        x = module(x)
        if name.startswith("act"):
            outs.append(x.flatten(1))
    return outs


@torch.no_grad()
def pooling_sensitivities_mc(
    depth: int,
    filter_size: int = 2,
    stride: int = 1,
    n: int | None = None,
    amplitude: float = 1.0,
    activation: str = "relu",
    noise: str = "gaussian",
    n_samples: int = 4096,
    generator: torch.Generator | None = None,
    include_diag: bool = True,
    batch_size: int = 1024,
) -> PoolingSensitivities:
    """D_k, G_k, R_k of the idealized net by explicit forward passes (any activation).

    D_k and the denominator are computed exactly from all N probes (deterministic, float64);
    the noise numerator is a Monte-Carlo mean over ``n_samples`` draws (probe positions cycle
    over 0..N-1, the noise is fresh each time), with its standard error in ``g_err`` and the
    error of R in ``R_err``.

    Args: as :func:`pooling_sensitivities` (``n`` defaults to 20 response widths for s = 1,
    ``4 F^depth`` for s = F), plus ``activation`` (``"relu"``, ``"tanh"``),
    ``noise`` in ``("gaussian", "rectified", "sphere", "rectified-sphere")``, ``n_samples``,
    ``generator`` (a seeded ``torch.Generator``; required for reproducibility).
    """
    if n is None:
        # Small: every probe is forwarded (an N x N batch). 20 response widths, or 4 blocks.
        if stride == 1:
            width = math.sqrt(depth * (filter_size**2 - 1) / 12)
            n = max(128, 2 ** math.ceil(math.log2(20 * width)))
        else:
            n = 4 * filter_size**depth
    n = int(n)
    if n > 16384:
        raise ValueError(f"n={n} is too large for the Monte-Carlo route (N x N probes); use n <= 16384")
    _check_net(depth, filter_size, stride, n)
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    A = float(amplitude)
    net = homogeneous_pooling_net(depth, filter_size, stride, activation)
    eye = torch.eye(n, dtype=torch.float64) * A
    probes = eye.unsqueeze(1)  # [N, 1, N]: x_i = A e_i
    shifted = torch.roll(eye, 1, dims=1).unsqueeze(1)  # x_{i+1}
    d_num = np.zeros(depth)
    sum_f = [None] * depth
    sum_f2 = np.zeros(depth)
    for start in range(0, n, batch_size):
        fx = _layer_outputs(net, probes[start:start + batch_size])
        ft = _layer_outputs(net, shifted[start:start + batch_size])
        for k in range(depth):
            d_num[k] += (ft[k] - fx[k]).pow(2).sum().item()
            s_ = fx[k].sum(0)
            sum_f[k] = s_ if sum_f[k] is None else sum_f[k] + s_
            sum_f2[k] += fx[k].pow(2).sum().item()
    d_num /= n
    # 2 sum_j Var_i f_j over the probes (population variance: pairs including i = j).
    den = 2 * np.array([sum_f2[k] / n - (sum_f[k] / n).pow(2).sum().item() for k in range(depth)])
    if not include_diag:
        den = den * n / (n - 1)
    target2 = 2 * A * A  # ||tau x - x||^2 for every probe
    acc = np.zeros((2, depth))  # running sum and sum of squares of the per-sample numerator
    done = 0
    while done < n_samples:
        b = min(batch_size, n_samples - done)
        pos = torch.arange(done, done + b) % n
        x = eye[pos].unsqueeze(1)
        xi = torch.randn(b, 1, n, generator=generator, dtype=torch.float64)
        if noise.startswith("rectified"):
            xi = xi.clamp_min(0)
        if noise.endswith("sphere"):
            eta = xi / xi.flatten(1).norm(dim=1).view(-1, 1, 1) * math.sqrt(target2)
        else:
            scale = math.sqrt(target2 / n) * (math.sqrt(2) if noise == "rectified" else 1.0)
            eta = xi * scale
        fx, fn = _layer_outputs(net, x), _layer_outputs(net, x + eta)
        for k in range(depth):
            per = (fn[k] - fx[k]).pow(2).sum(1).numpy()
            acc[0, k] += per.sum()
            acc[1, k] += (per**2).sum()
        done += b
    g_num = acc[0] / n_samples
    g_sd = np.sqrt(np.maximum(acc[1] / n_samples - g_num**2, 0) * n_samples / (n_samples - 1))
    g_err = g_sd / math.sqrt(n_samples) / den
    D, G = d_num / den, g_num / den
    config = dict(
        depth=depth, filter_size=filter_size, stride=stride, n=n, amplitude=A, noise=noise,
        include_diag=include_diag, activation=activation, method="monte-carlo",
        n_samples=n_samples,
    )
    return PoolingSensitivities(
        k=np.arange(1, depth + 1), D=D, G=G, R=D / G, d_num=d_num, g_num=g_num, den=den,
        g_err=g_err, R_err=(D / G) * g_err / G, config=config,
    )


# ---------------------------------------------------------------- laws and fits


def _kappa(rho):
    """Covariance of ``relu(X), relu(Y)`` for unit normals with correlation rho."""
    rho = np.asarray(rho, dtype=np.float64)
    return (np.sqrt(1 - rho * rho) + (math.pi - np.arccos(rho)) * rho - 1) / (2 * math.pi)


def asymptotic_sensitivities(
    k, filter_size: int = 2, stride: int = 1, activation: str = "relu"
) -> dict[str, np.ndarray]:
    """Leading closed forms of D_k, G_k, R_k (N -> infinity; module docstring, docs/theory.md).

    s = 1, ReLU: ``D = 3 / ((F^2 - 1) k)``, ``G = sqrt(k (F^2 - 1) / (12 pi)) / F + b_F``.
    s = F, ReLU: ``D = F^-k``, ``G = F^(k-1) / (2 pi) + 1/2 - 1/(2 pi)``.
    tanh (small amplitude): D as for ReLU, ``G = 1``. ``R = D / G`` in every case.

    >>> a = asymptotic_sensitivities([1, 2], filter_size=2, stride=2)
    >>> [round(float(x), 4) for x in a["G"]]
    [0.5, 0.6592]
    """
    k = np.asarray(k, dtype=np.float64)
    F = filter_size
    if stride not in (1, F):
        raise ValueError(f"stride must be 1 or filter_size={F}, got {stride}")
    if activation not in ("relu", "tanh"):
        raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
    if stride == 1:
        V = k * (F * F - 1) / 12
        D = 1 / (4 * V)
        b = sum(_kappa(1 - abs(d) / F) for d in range(-(F - 1), F)) / F
        G = np.sqrt(V / math.pi) / F + b
    else:
        D = float(F) ** (-k)
        G = float(F) ** (k - 1) / (2 * math.pi) + 0.5 - 1 / (2 * math.pi)
    if activation == "tanh":
        G = np.ones_like(k)
    return {"D": D, "G": G, "R": D / G}


def predicted_exponents(stride: int, activation: str = "relu") -> dict:
    """The predicted laws (science.md §5) in the convention of :func:`fit_exponent`.

    ``stride == 1``: ``law="power"``, slopes of ``log X`` vs ``log k``: D -1, G +1/2, R -3/2.
    ``stride == s > 1`` (s = F): ``law="exponential"``, slopes of ``log X`` vs ``k``:
    D ``-ln s``, G ``+ln s``, R ``-2 ln s`` (2^-k, 2^k, 4^-k for s = 2).
    ``activation="tanh"``: G slope 0 (no pile-up), R = D's slope.

    >>> predicted_exponents(1)
    {'law': 'power', 'D': -1.0, 'G': 0.5, 'R': -1.5}
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if activation not in ("relu", "tanh"):
        raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
    if stride == 1:
        law, d, g = "power", -1.0, 0.5
    else:
        law, d, g = "exponential", -math.log(stride), math.log(stride)
    if activation == "tanh":
        g = 0.0
    return {"law": law, "D": d, "G": g, "R": d - g}


@dataclass(frozen=True)
class ExponentFit:
    """Least-squares fit ``log X = intercept + slope * t`` (``t = log k`` or ``k``).

    ``stderr``: standard error of the slope (residual-scaled; nan with 2 points).
    ``base``: ``exp(slope)`` (X ~ base^k for the exponential law).
    """

    slope: float
    stderr: float
    intercept: float
    law: str
    n_points: int
    k_min: float
    k_max: float

    @property
    def base(self) -> float:
        return math.exp(self.slope)


def fit_exponent(
    k,
    values,
    law: str = "power",
    k_min: float | None = None,
    k_max: float | None = None,
    errors=None,
) -> ExponentFit:
    """Fit the exponent of a measured curve ``values[k]``.

    ``law="power"``: ``values ~ C k^slope`` (least squares of log values on log k);
    ``law="exponential"``: ``values ~ C exp(slope k)`` (log values on k). Points with
    ``k_min <= k <= k_max`` are used; ``errors`` (standard errors of ``values``) weight the
    fit by ``(values / errors)^2``. The slope's standard error is scaled by the residuals.

    >>> f = fit_exponent([1, 2, 4, 8], [3.0, 1.5, 0.75, 0.375])
    >>> round(f.slope, 12), round(f.stderr, 12)
    (-1.0, 0.0)
    """
    if law not in ("power", "exponential"):
        raise ValueError(f"law must be 'power' or 'exponential', got {law!r}")
    k = np.asarray(k, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    if k.shape != y.shape:
        raise ValueError(f"k and values must have the same length, got {k.size} and {y.size}")
    sel = np.ones_like(k, dtype=bool)
    if k_min is not None:
        sel &= k >= k_min
    if k_max is not None:
        sel &= k <= k_max
    k, y = k[sel], y[sel]
    if k.size < 2:
        raise ValueError(f"need at least 2 points in [k_min, k_max] to fit, got {k.size}")
    if not np.all(y > 0) or not np.all(np.isfinite(y)):
        raise ValueError("values must be positive and finite to fit a log-law")
    if law == "power" and not np.all(k > 0):
        raise ValueError("a power law needs k > 0")
    t = np.log(k) if law == "power" else k
    ly = np.log(y)
    if errors is None:
        wts = np.ones_like(ly)
    else:
        e = np.asarray(errors, dtype=np.float64).ravel()[sel]
        if not np.all(e > 0):
            raise ValueError("errors must be positive")
        wts = (y / e) ** 2
    tm = np.sum(wts * t) / wts.sum()
    ym = np.sum(wts * ly) / wts.sum()
    stt = np.sum(wts * (t - tm) ** 2)
    if stt == 0:
        raise ValueError("all k are equal: cannot fit a slope")
    slope = np.sum(wts * (t - tm) * (ly - ym)) / stt
    intercept = ym - slope * tm
    if k.size > 2:
        resid = ly - intercept - slope * t
        stderr = math.sqrt(np.sum(wts * resid**2) / (k.size - 2) / stt)
    else:
        stderr = float("nan")
    return ExponentFit(
        float(slope), float(stderr), float(intercept), law, int(k.size),
        float(k.min()), float(k.max()),
    )


def local_exponents(k, values, law: str = "power") -> tuple[np.ndarray, np.ndarray]:
    """Slopes between consecutive points: ``(k_mid, slope)``, ``[len(k) - 1]`` each.

    Power: ``d log X / d log k`` at the geometric mid-point; exponential: ``d log X / dk``.
    """
    k = np.asarray(k, dtype=np.float64)
    ly = np.log(np.asarray(values, dtype=np.float64))
    if law == "power":
        t = np.log(k)
        return np.exp(0.5 * (t[1:] + t[:-1])), np.diff(ly) / np.diff(t)
    if law == "exponential":
        return 0.5 * (k[1:] + k[:-1]), np.diff(ly) / np.diff(k)
    raise ValueError(f"law must be 'power' or 'exponential', got {law!r}")
