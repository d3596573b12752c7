"""Maximum-entropy random diffeomorphisms of images and 1D signals: sample, then apply.

A displacement field tau = (u, v) on the unit square (Petrini et al. 2021, science.md §2)::

    u(x, y) = sum_{i,j >= 1, sqrt(i^2 + j^2) < c + 1/2} C_ij sin(i pi x) sin(j pi y),
    C_ij ~ N(0, T / (i^2 + j^2)) independent; v drawn the same way, independently.

1D signals use one sine series, ``u(x) = sum_{i <= c} C_i sin(i pi x)``, ``C_i ~ N(0, T / i^2)``.

Conventions (all tested):

* Pixel ``p`` of an axis of ``n`` pixels sits at ``x_p = p / (n - 1)`` on [0, 1], so the field
  vanishes exactly on the border pixels (the authors' ``linspace(0, 1, n)``).
* The displacement in pixels along an axis of ``n`` pixels is ``n * u``; the deformed image is
  ``(tau x)(p) = x(p - displacement(p))``, read with bilinear (default), nearest or Gaussian
  (width 0.4715 px) interpolation, source coordinates clamped to the image.
* Component order is (x, y) = (along width, along height), as in ``grid_sample``.

Sampling returns a :class:`DiffeoFields`, the exact coefficients of every field; applying it again
replays the same diffeomorphisms (for the matched noise, another layer, a test).

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.rand(4, 3, 32, 32)
>>> T = temperature_for_displacement(1.0, cut=3, size=32)      # the paper's default, ~1.13e-3
>>> fields = sample_fields(4, 32, T, cut=3, generator=g)
>>> y = apply(x, fields)
>>> y.shape, torch.equal(apply(x, fields), y)
(torch.Size([4, 3, 32, 32]), True)
>>> round(T, 6)
0.001132
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DiffeoFields",
    "sample_fields",
    "apply",
    "warp",
    "temperature_range",
    "typical_displacement",
    "temperature_for_displacement",
    "mean_squared_displacement",
    "jacobian_determinant",
    "Diffeo",
]

INTERPOLATIONS = ("bilinear", "nearest", "gaussian")
GAUSSIAN_SIGMA = 0.4715  # px: the authors' Gaussian interpolation width


# ----------------------------------------------------------------------------------------------
# Natural temperature range
# ----------------------------------------------------------------------------------------------
def _log_cut(cut: float | Tensor) -> float | Tensor:
    if isinstance(cut, Tensor):
        if (cut <= 1).any():
            raise ValueError("the natural temperature range needs cut > 1 (it involves ln(cut)).")
        return cut.double().log()
    if cut <= 1:
        raise ValueError(f"the natural temperature range needs cut > 1 (it involves ln(cut)); got {cut}.")
    return math.log(cut)


def _side(size: int | Sequence[int]) -> int:
    # For a non-square image the longer side sets the scale: T_min then displaces at least half a
    # pixel along every axis, and T_max does not depend on the size.
    return size if isinstance(size, int) else max(size)


def temperature_range(size: int | Sequence[int], cut: float | Tensor) -> tuple:
    """Natural temperatures ``(T_min, T_max)`` for images of side ``size`` and cutoff ``cut``.

    ``T_min = 1 / (pi n^2 ln c)`` (typical displacement of half a pixel) and
    ``T_max = 4 / (pi^3 c^2 ln c)`` (largest T without overhangs: the map stays invertible).

    >>> tmin, tmax = temperature_range(32, 3)
    >>> f"{tmin:.3e} {tmax:.3e}"
    '2.829e-04 1.305e-02'
    """
    n, log = _side(size), _log_cut(cut)
    return 1 / (math.pi * n**2 * log), 4 / (math.pi**3 * cut**2 * log)


def typical_displacement(T: float | Tensor, cut: float | Tensor, size: int | Sequence[int]):
    """The paper's typical displacement in pixels, ``delta = (n / 2) sqrt(pi T ln c)``.

    This is the large-``c`` asymptote of the root-mean-square displacement at the image centre;
    at small ``c`` the exact value differs (``mean_squared_displacement`` gives it: at ``c = 3``
    the centre rms is 1.27x ``delta``, the image-average rms 0.84x).

    >>> round(typical_displacement(temperature_for_displacement(1.0, 3, 32), 3, 32), 6)
    1.0
    """
    return _side(size) / 2 * (math.pi * T * _log_cut(cut)) ** 0.5


def temperature_for_displacement(delta: float, cut: float, size: int | Sequence[int]) -> float:
    """Temperature giving typical displacement ``delta`` px: ``T = 4 delta^2 / (pi n^2 ln c)``.

    >>> round(temperature_for_displacement(1.0, 3, 32), 5)   # the paper's CIFAR-10 default
    0.00113
    """
    if delta < 0:
        raise ValueError(f"displacement must be >= 0 pixels, got {delta}.")
    return 4 * delta**2 / (math.pi * _side(size) ** 2 * _log_cut(cut))


def _mode_inverse_r2(cut: int, ndim: int, dtype=torch.float64, device=None) -> Tensor:
    """``1 / (i^2 + j^2)`` on the retained modes, 0 elsewhere: [K, K] (2D) or [K] (1D), K = cut."""
    k = torch.arange(1, cut + 1, dtype=dtype, device=device)
    if ndim == 1:
        return 1 / k**2
    r2 = k[:, None] ** 2 + k[None, :] ** 2
    return torch.where(r2 < (cut + 0.5) ** 2, 1 / r2, torch.zeros((), dtype=dtype, device=device))


def mean_squared_displacement(
    T: float, cut: int, size: int | Sequence[int], where: str = "centre"
) -> float:
    """Exact E|displacement|^2 in px^2 (all components), at the centre or averaged over pixels.

    Centre (2D, square ``n``): ``n^2 * 2 T sum_{odd i, j} 1 / (i^2 + j^2)``; average: every
    ``sin^2`` averages to 1/2 over the pixels (exactly, on the ``p / (n - 1)`` grid), so
    ``n^2 * 2 T sum_{ij} 1 / (4 (i^2 + j^2))``. Non-square images weight each component by its
    own axis length.

    >>> round(mean_squared_displacement(1e-3, 3, 32, "average"), 4)
    0.6272
    """
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    ndim = len(sizes)
    w = _mode_inverse_r2(int(cut), ndim)
    if where == "centre":
        odd = (torch.arange(1, int(cut) + 1) % 2 == 1).double()
        w = w * (odd if ndim == 1 else odd[:, None] * odd[None, :])
    elif where == "average":
        # Mean of sin^2(i pi p/(n-1)) over p = 0..n-1 is exactly 1/2 for 0 < i < n - 1.
        w = w / 2**ndim
    else:
        raise ValueError(f"where must be 'centre' or 'average', got {where!r}.")
    return float(T * w.sum() * sum(n**2 for n in sizes))


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffeoFields:
    """Replayable parameters of a batch of random diffeomorphisms (one field per sample).

    Attributes:
        coeffs: ``[B, 2, K, K]`` for images (component (x, y), mode i along x, mode j along y) or
            ``[B, 1, K]`` for 1D signals, ``K = max(cut)``; already scaled (``C_ij`` itself,
            zero outside each sample's cutoff), in unit-square units.
        T: ``[B]`` temperatures.  cut: ``[B]`` integer cutoffs.
        size: ``(H, W)`` or ``(L,)``, the spatial size the fields are defined on.
    """

    coeffs: Tensor
    T: Tensor
    cut: Tensor
    size: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return self.coeffs.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.size)

    def to(self, device=None, dtype=None) -> DiffeoFields:
        return DiffeoFields(self.coeffs.to(device=device, dtype=dtype), self.T.to(device),
                            self.cut.to(device), self.size)

    def __getitem__(self, index) -> DiffeoFields:
        """Select samples: ``fields[2:5]``, ``fields[mask]``."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return DiffeoFields(self.coeffs[index], self.T[index], self.cut[index], self.size)

    def field(self) -> Tensor:
        """The unit-square field: ``[B, 2, H, W]`` ((u, v) = (x, y) components) or ``[B, 1, L]``."""
        c = self.coeffs
        if self.ndim == 1:
            s = _sine_basis(self.size[0], c.shape[-1], c.dtype, c.device)  # [L, K]
            return c @ s.T
        H, W = self.size
        sy = _sine_basis(H, c.shape[-1], c.dtype, c.device)  # [H, K]
        sx = _sine_basis(W, c.shape[-1], c.dtype, c.device)  # [W, K]
        return torch.einsum("bcij,yj,xi->bcyx", c, sy, sx)

    def displacement(self) -> Tensor:
        """Displacement in pixels, ``n * u`` per axis: ``[B, 2, H, W]`` (x then y) or ``[B, 1, L]``."""
        u = self.field()
        if self.ndim == 1:
            return u * self.size[0]
        H, W = self.size
        return u * torch.tensor([W, H], dtype=u.dtype, device=u.device).view(1, 2, 1, 1)


@functools.lru_cache(maxsize=64)
def _sine_basis(n: int, K: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``sin(k pi p / (n - 1))``: [n, K], cached (the fields are batched matmuls on it)."""
    x = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    k = torch.arange(1, K + 1, dtype=torch.float64, device=device)
    return torch.sin(math.pi * x[:, None] * k[None, :]).to(dtype)


@functools.lru_cache(maxsize=64)
def _cosine_basis(n: int, K: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``d/dx sin(k pi x) = k pi cos(k pi x)`` at ``x = p / (n - 1)``: [n, K]."""
    x = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    k = torch.arange(1, K + 1, dtype=torch.float64, device=device)
    return (k * math.pi * torch.cos(math.pi * x[:, None] * k[None, :])).to(dtype)


def _per_sample(value, batch: int, name: str, dtype) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype).detach().cpu()
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or a tensor of shape [{batch}], got {tuple(t.shape)}.")
    if not torch.isfinite(t.double()).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}.")
    return t.clone()


def _check_size(size) -> tuple[int, ...]:
    sizes = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(sizes) not in (1, 2) or min(sizes) < 2:
        raise ValueError(
            f"size must be an int n (n x n images), (H, W) or (L,) with every side >= 2; got {size!r}."
        )
    return sizes


def sample_fields(
    batch: int,
    size: int | Sequence[int],
    T: float | Tensor,
    cut: int | Tensor = 3,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> DiffeoFields:
    """Draw ``batch`` independent max-entropy displacement fields.

    Args:
        batch: number of fields B (one per sample).
        size: ``n`` (n x n images), ``(H, W)``, or ``(L,)`` for 1D signals.
        T: temperature, scalar or ``[B]``; ``C_ij ~ N(0, T / (i^2 + j^2))``.
        cut: integer cutoff ``c >= 1``, scalar or ``[B]``; modes with ``sqrt(i^2 + j^2) < c + 1/2``
            (1D: ``i <= c``).
        generator: source of randomness. Coefficients are drawn in float64 on the generator's
            device, so the same generator state gives the same fields for every ``dtype``.

    Returns:
        :class:`DiffeoFields` with ``coeffs [B, 2, K, K]`` (or ``[B, 1, K]``), ``K = max(cut)``.

    >>> f = sample_fields(2, (16, 24), T=1e-3, cut=torch.tensor([2, 4]))
    >>> f.coeffs.shape, f.displacement().shape
    (torch.Size([2, 2, 4, 4]), torch.Size([2, 2, 16, 24]))
    """
    sizes = _check_size(size)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}.")
    ndim = len(sizes)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if isinstance(T, int | float) and isinstance(cut, int | float):
        # Fast path (the common case): checks on Python numbers and a cached table of
        # standard deviations; identical draws and values to the per-sample path below.
        _check_scalar_T_cut(float(T), float(cut), sizes)
        std, K = _scalar_std(float(T), int(cut), ndim, gen_device)
        z = torch.randn((batch, *std.shape[1:]), generator=generator, dtype=torch.float64,
                        device=gen_device)
        coeffs = (z * std).to(device=device or gen_device, dtype=dtype)
        return DiffeoFields(coeffs, torch.full((batch,), float(T), dtype=torch.float64,
                                               device=coeffs.device),
                            torch.full((batch,), K, dtype=torch.long, device=coeffs.device),
                            sizes)
    Ts, cuts = _per_sample(T, batch, "T", torch.float64), _per_sample(cut, batch, "cut", torch.float64)
    cuts = _check_T_cut(Ts, cuts, sizes)
    K = int(cuts.max())
    shape = (batch, 2, K, K) if ndim == 2 else (batch, 1, K)
    z = torch.randn(shape, generator=generator, dtype=torch.float64, device=gen_device)
    coeffs = (z * _std(Ts, cuts, K, ndim).to(gen_device)).to(device=device or gen_device,
                                                              dtype=dtype)
    return DiffeoFields(coeffs, Ts.to(coeffs.device), cuts.to(coeffs.device), sizes)


def _check_T_cut(Ts: Tensor, cuts: Tensor, sizes) -> Tensor:
    """Validate per-sample temperatures and cutoffs (float64 ``[B]``); the cutoffs as long."""
    if (Ts < 0).any():
        raise ValueError(f"temperature T must be >= 0, got {Ts.min().item()}.")
    if (cuts != cuts.round()).any() or (cuts < 1).any():
        raise ValueError(f"cut must be an integer >= 1, got {cuts.tolist()}.")
    cuts = cuts.long()
    _warn_outside_natural_range(Ts, cuts, sizes, stacklevel=4)
    return cuts


def _std(Ts: Tensor, cuts: Tensor, K: int, ndim: int) -> Tensor:
    """Standard deviations of the coefficients, ``sqrt(T / r^2)`` on each sample's retained
    modes and 0 beyond its cutoff: ``[B, 1, K, K]`` (2D) or ``[B, 1, K]`` (1D), float64."""
    k = torch.arange(1, K + 1, dtype=torch.float64)
    if ndim == 2:
        r2 = k[:, None] ** 2 + k[None, :] ** 2
        keep = r2[None] < (cuts[:, None, None] + 0.5) ** 2
        return torch.where(keep, Ts[:, None, None].sqrt() / r2.sqrt(), 0.0)[:, None]
    keep = k[None] <= cuts[:, None]
    return torch.where(keep, Ts[:, None].sqrt() / k, 0.0)[:, None]


def _check_scalar_T_cut(T: float, cut: float, sizes) -> None:
    """:func:`_check_T_cut` for one (T, cut) on Python numbers (same errors, same warning)."""
    for name, v in (("T", T), ("cut", cut)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {[v]}.")
    if T < 0:
        raise ValueError(f"temperature T must be >= 0, got {T}.")
    if cut != round(cut) or cut < 1:
        raise ValueError(f"cut must be an integer >= 1, got {[cut]}.")
    if cut > 1 and T > 0:
        tmin, tmax = temperature_range(sizes, cut)
        if T < tmin * (1 - 1e-9) or T > tmax * (1 + 1e-9):
            _warn_natural_range(sizes, [int(cut)], stacklevel=4)


@functools.lru_cache(maxsize=256)
def _scalar_std(T: float, cut: int, ndim: int, device: torch.device) -> tuple[Tensor, int]:
    """:func:`_std` of one (T, cut) shared by every sample (cached, on the generator's
    device): ``[1, C, K(, K)]`` with the components axis expanded (C = 2 for images, 1 for
    signals), and K = cut."""
    std = _std(torch.tensor([T], dtype=torch.float64), torch.tensor([cut]), cut, ndim)
    return std.expand(1, 2 if ndim == 2 else 1, *std.shape[2:]).to(device), cut


def _warn_outside_natural_range(Ts: Tensor, cuts: Tensor, sizes, stacklevel: int = 3) -> None:
    ok = cuts > 1  # the natural range needs ln(cut) > 0
    if not ok.any() or (Ts == 0).all():
        return
    tmin, tmax = temperature_range(sizes, cuts[ok].double())
    T = Ts[ok]
    if ((T > 0) & (T < tmin * (1 - 1e-9))).any() or (T > tmax * (1 + 1e-9)).any():
        _warn_natural_range(sizes, sorted(set(cuts[ok].tolist())), stacklevel + 1)


def _warn_natural_range(sizes, cuts: list[int], stacklevel: int) -> None:
    warnings.warn(
        f"T outside the natural range [T_min, T_max] for size {sizes} and cut "
        f"{cuts}: typical displacements under half a pixel or "
        "fields with overhangs (not invertible). See diffeosense.diffeo.temperature_range.",
        stacklevel=stacklevel,
    )


# ----------------------------------------------------------------------------------------------
# Applying
# ----------------------------------------------------------------------------------------------
def _check_image(x: Tensor, size: tuple[int, ...], batch: int) -> tuple[Tensor, tuple[int, ...]]:
    """Reshape x [B, ..., *size] (or [..., *size] when batch == 1) to [B, C, *size]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point image, got {x.dtype}; convert first, e.g. x.float() / 255."
        )
    nd = len(size)
    if x.ndim < nd + 1 or tuple(x.shape[-nd:]) != size:
        kind = "[B, C, H, W]" if nd == 2 else "[B, C, L]"
        raise ValueError(
            f"input of shape {tuple(x.shape)} does not match fields of size {size}: expected {kind} "
            f"with spatial size {size} (x.ndim >= {nd + 1})."
        )
    lead = tuple(x.shape[:-nd])
    if batch == 1:
        return x.reshape(1, -1, *size), lead
    if lead[0] != batch:
        raise ValueError(
            f"input batch {lead[0]} (shape {tuple(x.shape)}) does not match the {batch} sampled "
            "fields: sample one field per sample, or a single field to share."
        )
    return x.reshape(batch, -1, *size), lead


def _check_interp(interp: str) -> None:
    if interp not in INTERPOLATIONS:
        raise ValueError(f"interp must be one of {INTERPOLATIONS}, got {interp!r}.")


def apply(x: Tensor, fields: DiffeoFields, interp: str = "bilinear") -> Tensor:
    """Deform ``x`` with the sampled fields: ``out(p) = x(p - displacement(p))``.

    Args:
        x: ``[B, C, H, W]`` (any number of dims between B and the spatial ones) or ``[B, C, L]``;
            with a single field (``fields.batch_size == 1``) any leading shape, all warped alike.
        fields: from :func:`sample_fields`, same spatial size.
        interp: ``"bilinear"`` (default), ``"nearest"`` or ``"gaussian"`` (width 0.4715 px).

    Returns:
        Tensor of the same shape, dtype and device as ``x``; differentiable with respect to ``x``.

    The sampling grid is built in one fused batched product, ``grid = identity + S_y C' S_x^T``
    with the cached sine bases and the pixel/normalization scales folded into ``C'``, then a
    single ``grid_sample``.
    """
    _check_interp(interp)
    xb, lead = _check_image(x, fields.size, fields.batch_size)
    src = fields.coeffs
    # Checked where the coefficients live: on the host (sample_fields with a CPU generator)
    # that waits for no device. Coefficients on an accelerator are not checked for finiteness
    # (that would stall it at every call; sample_fields never makes non-finite ones).
    if src.device.type == "cpu":
        # One pass over the (small) coefficients: a sample's |C| sum is 0 for the zero field
        # and non-finite if any coefficient is (or the sum overflows: |C| ~ 1e38 in float32).
        size = src.reshape(src.shape[0], -1).abs().sum(1)
        if not torch.isfinite(size).all():
            raise ValueError("the fields have non-finite coefficients.")
        zero = size == 0
        some_zero: bool | None = bool(zero.any())
    else:
        zero, some_zero = (src.flatten(1) == 0).all(1), None  # unknown without a device sync
    # non_blocking: a host-to-device copy that does not wait for the device's queue.
    c = src.to(device=x.device, dtype=x.dtype, non_blocking=True)
    K = c.shape[-1]
    if fields.ndim == 1:
        (L,) = fields.size
        # Normalized source coordinate (align_corners=True): g = 2 (p - L u) / (L - 1) - 1.
        u = c[:, 0] @ _sine_basis(L, K, x.dtype, x.device).T  # [B, L]
        gx = _identity(L, x.dtype, x.device) - (2 * L / (L - 1)) * u
        grid = torch.stack([gx, torch.zeros_like(gx)], dim=-1)[:, None]  # [B, 1, L, 2]
        out = _sample(xb[:, :, None], grid, interp)[:, :, 0]
    else:
        H, W = fields.size
        out = _sample(xb, _grid_2d(c, H, W), interp)
    # A zero field is the identity map; grid_sample's coordinate rounding (~1e-7 in float32) would
    # otherwise blur it slightly, so such samples are returned exactly.
    if some_zero is not False:
        zero = zero.to(out.device, non_blocking=True)
        out = torch.where(zero.view(-1, *(1,) * (out.ndim - 1)), xb, out)
    return out.reshape(*lead, *fields.size)


def _grid_2d(c: Tensor, H: int, W: int) -> Tensor:
    """Normalized sampling grid ``[B, H, W, 2]`` of the fields with coefficients ``c [B, 2, K, K]``.

    ``grid[b, y, x, comp] = id[y, x, comp] + s_comp sum_ij C[b, comp, i, j] S_y[y, j] S_x[x, i]``,
    ``s = (-2W / (W - 1), -2H / (H - 1))`` (pixels ``n u`` to align_corners=True units, minus:
    the source is ``p - displacement``). Two products on cached factors and no other pass over
    the ``[B, H, 2W]`` output: ``A[b] = C_b M`` (tiny; the scales are folded into ``M``), then
    one batched ``[H, K + 2] @ [K + 2, 2W]`` per sample. The two extra rank-one terms write the
    identity (``1 (x) id_x`` and ``id_y (x) 1``; their unit coefficients sit in ``C_b``), so there
    is no separate add, copy or concatenation. Zero coefficients add exact zeros: the grid of a
    zero field is the identity bit for bit.
    """
    B, K = c.shape[0], c.shape[-1]
    Y, M = _grid_factors(H, W, K, c.dtype, c.device)
    # Rows (b, j) against M's rows (i, comp); row K picks id_x, row K + 1 picks 1 (times id_y).
    ca = c.new_zeros(B, K + 2, 2 * K + 2)
    ca[:, :K, : 2 * K].view(B, K, K, 2).copy_(c.permute(0, 3, 2, 1))
    ca[:, K, 2 * K] = 1
    ca[:, K + 1, 2 * K + 1] = 1
    A = torch.mm(ca.view(B * (K + 2), 2 * K + 2), M).view(B, K + 2, 2 * W)
    return torch.bmm(Y.expand(B, H, K + 2), A).view(B, H, W, 2)


@functools.lru_cache(maxsize=64)
def _grid_factors(H: int, W: int, K: int, dtype: torch.dtype, device: torch.device):
    """Cached factors of :func:`_grid_2d`: ``Y [H, K + 2]`` and ``M [2K + 2, 2W]``.

    ``Y = [S_y | 1 | id_y]``; ``M[(i, comp), (x, comp')] = s_comp S_x[x, i] delta(comp, comp')``
    for ``i < K``, then the rows ``(id_x, 0)`` and ``(0, 1)`` interleaved (layout ``(x, comp)`` of
    the grid). The sine part is built in float64, then cast.
    """
    f64 = torch.float64
    sx = _sine_basis(W, K, f64, device)  # [W, K]
    M = torch.zeros(K + 1, 2, W, 2, dtype=f64, device=device)
    M[:K, 0, :, 0] = (-2 * W / (W - 1)) * sx.T
    M[:K, 1, :, 1] = (-2 * H / (H - 1)) * sx.T
    M = M.reshape(2 * K + 2, 2 * W).to(dtype)
    # The identity rows in the working dtype, as _identity_grid: a zero field gives its grid exactly.
    M[2 * K, 0::2] = _identity(W, dtype, device)
    M[2 * K + 1, 1::2] = 1
    ones = torch.ones(H, 1, dtype=dtype, device=device)
    Y = torch.cat([_sine_basis(H, K, dtype, device), ones, _identity(H, dtype, device)[:, None]], 1)
    return Y, M


def warp(x: Tensor, displacement: Tensor, interp: str = "bilinear") -> Tensor:
    """Warp by an arbitrary pixel displacement: ``out(p) = x(p - displacement(p))``, clamped.

    Args:
        x: ``[B, C, H, W]`` or ``[B, C, L]``.
        displacement: ``[B, 2, H, W]`` (x then y, in pixels) or ``[B, 1, L]``; ``B`` may be 1.

    >>> import torch
    >>> x = torch.zeros(1, 1, 2, 5); x[..., 1] = 1.0
    >>> d = torch.zeros(1, 2, 2, 5); d[:, 0] = 2.0          # move everything 2 px to the right
    >>> warp(x, d)[0, 0, 0].tolist()
    [0.0, 0.0, 0.0, 1.0, 0.0]
    """
    _check_interp(interp)
    nd = displacement.ndim - 2
    if nd not in (1, 2) or displacement.shape[1] != nd:
        raise ValueError(
            f"displacement must be [B, 2, H, W] or [B, 1, L], got {tuple(displacement.shape)}."
        )
    size = tuple(displacement.shape[2:])
    xb, lead = _check_image(x, size, displacement.shape[0])
    d = displacement.to(device=x.device, dtype=x.dtype)
    if nd == 1:
        (L,) = size
        gx = _identity(L, x.dtype, x.device) - 2 * d[:, 0] / (L - 1)
        grid = torch.stack([gx, torch.zeros_like(gx)], dim=-1)[:, None]
        out = _sample(xb[:, :, None], grid.expand(xb.shape[0], -1, -1, -1), interp)[:, :, 0]
    else:
        H, W = size
        scale = torch.tensor([2 / max(W - 1, 1), 2 / max(H - 1, 1)], dtype=x.dtype, device=x.device)
        grid = _identity_grid(H, W, x.dtype, x.device).view(1, H, W, 2) - (
            d.permute(0, 2, 3, 1) * scale
        )
        out = _sample(xb, grid.expand(xb.shape[0], -1, -1, -1), interp)
    return out.reshape(*lead, *size)


@functools.lru_cache(maxsize=64)
def _identity(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.linspace(-1, 1, n, dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _identity_grid(H: int, W: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalized identity grid, laid out [1, H, 2W] = [1, H, W, (x, y)] for ``baddbmm``."""
    gy, gx = torch.meshgrid(_identity(H, dtype, device), _identity(W, dtype, device), indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(1, H, 2 * W)


def _sample(x: Tensor, grid: Tensor, interp: str) -> Tensor:
    """``grid_sample`` with clamped coordinates; grid [B, H, W, 2] normalized, align_corners=True."""
    if interp == "gaussian":
        return _gaussian_sample(x, grid)
    # padding_mode="border" clips source coordinates to the image: the authors' clamp.
    return F.grid_sample(x, grid, mode=interp, padding_mode="border", align_corners=True)


def _gaussian_sample(x: Tensor, grid: Tensor) -> Tensor:
    """Gaussian-kernel interpolation (the authors' third mode), separable and truncated.

    ``out(p) = sum_q w(q) x(q) / sum_q w(q)``, ``w(q) = exp(-|q - s(p)|^2 / (2 sigma^2))`` with
    ``s(p)`` the clamped source position. The weights factor over the axes, so the normalization
    does too; the window floor(s) - 3 .. floor(s) + 4 drops only pixels more than 3 px away, which
    weigh < exp(-3^2 / (2 sigma^2)) = 1.6e-9 of the nearest.
    """
    B, C, H, W = x.shape
    Ho, Wo = grid.shape[1:3]
    sx = ((grid[..., 0] + 1) * (W - 1) / 2).clamp(0, W - 1)  # [B, Ho, Wo]
    sy = ((grid[..., 1] + 1) * (H - 1) / 2).clamp(0, H - 1)
    offsets = torch.arange(-3, 5, device=x.device)  # floor(s) - 3 .. floor(s) + 4

    def axis(s: Tensor, n: int) -> tuple[Tensor, Tensor]:
        q = s.floor().long()[..., None] + offsets  # [B, Ho, Wo, 8]
        w = torch.exp(-((q.to(s.dtype) - s[..., None]) ** 2) / (2 * GAUSSIAN_SIGMA**2))
        w = torch.where((q >= 0) & (q < n), w, torch.zeros_like(w))
        return q.clamp(0, n - 1), w / w.sum(-1, keepdim=True)

    qx, wx = axis(sx, W)
    qy, wy = axis(sy, H)
    flat = x.reshape(B, C, H * W)
    out = x.new_zeros(B, C, Ho * Wo)
    for a in range(qy.shape[-1]):
        for b in range(qx.shape[-1]):
            idx = (qy[..., a] * W + qx[..., b]).reshape(B, 1, Ho * Wo).expand(B, C, -1)
            out = out + (wy[..., a] * wx[..., b]).reshape(B, 1, -1) * flat.gather(2, idx)
    return out.reshape(B, C, Ho, Wo)


def jacobian_determinant(fields: DiffeoFields) -> Tensor:
    """Determinant of the Jacobian of the pixel map ``p -> p - displacement(p)``: [B, H, W].

    Computed exactly from the derivative basis ``k pi cos(k pi x)``. The deformation has no
    overhang (is invertible) where it stays positive everywhere; for 1D, ``1 - d(disp)/dp``: [B, L].
    """
    c = fields.coeffs.double()
    K = c.shape[-1]
    if fields.ndim == 1:
        (L,) = fields.size
        du = c[:, 0] @ _cosine_basis(L, K, c.dtype, c.device).T
        return 1 - L / (L - 1) * du
    H, W = fields.size
    sx, sy = _sine_basis(W, K, c.dtype, c.device), _sine_basis(H, K, c.dtype, c.device)
    dx, dy = _cosine_basis(W, K, c.dtype, c.device), _cosine_basis(H, K, c.dtype, c.device)
    d_dx = torch.einsum("bcij,yj,xi->bcyx", c, sy, dx)  # d/dX of (u, v)
    d_dy = torch.einsum("bcij,yj,xi->bcyx", c, dy, sx)  # d/dY of (u, v)
    # Pixel-space derivatives: disp_x = W u, disp_y = H v, X = x_pix / (W - 1), Y = y_pix / (H - 1).
    uxx, uxy = W / (W - 1) * d_dx[:, 0], W / (H - 1) * d_dy[:, 0]
    vyx, vyy = H / (W - 1) * d_dx[:, 1], H / (H - 1) * d_dy[:, 1]
    return (1 - uxx) * (1 - vyy) - uxy * vyx


# ----------------------------------------------------------------------------------------------
# Module wrapper (augmentation / torchvision transform)
# ----------------------------------------------------------------------------------------------
class Diffeo(nn.Module):
    """Random diffeomorphism transform, one independent field per sample.

    Args:
        cut: fixed integer cutoff, or ``(c_min, c_max)``: drawn per sample uniformly among the
            integers of the range.
        T: fixed temperature; ``(T_lo, T_hi)`` explicit range; or ``None`` for the natural range
            ``[T_min, T_max]`` of each sample's cut (needs cut > 1).
        T_beta: ``(a, b)`` of the Beta law placing T in its range (``(1, 1)``: uniform; the
            authors' augmentation used such Beta laws).
        interp: interpolation mode.
        generator: default generator (``forward`` also takes one).

    ``forward(x, params=None, generator=None)`` returns the deformed batch; the parameters it
    used are in ``self.last_params`` and ``forward(x, params=...)`` replays them exactly.
    Accepts ``[B, C, H, W]`` batches and single ``[C, H, W]`` images (torchvision transforms).

    >>> import torch
    >>> aug = Diffeo(cut=(2, 5), generator=torch.Generator().manual_seed(0))
    >>> x = torch.rand(8, 3, 32, 32)
    >>> y = aug(x)
    >>> torch.equal(aug(x, params=aug.last_params), y), aug.last_params.cut.tolist()
    (True, [2, 5, 3, 2, 5, 5, 5, 5])
    """

    def __init__(
        self,
        cut: int | tuple[int, int] = 3,
        T: float | tuple[float, float] | None = None,
        T_beta: tuple[float, float] = (1.0, 1.0),
        interp: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_interp(interp)
        lo, hi = (cut, cut) if isinstance(cut, int) else cut
        if lo < 1 or hi < lo:
            raise ValueError(f"cut must be an int >= 1 or a range (c_min <= c_max), got {cut}.")
        if T is None and lo < 2:
            raise ValueError("the natural temperature range needs cut >= 2; give T explicitly.")
        self.cut_range, self.T, self.T_beta, self.interp = (lo, hi), T, T_beta, interp
        self.generator = generator
        self.last_params: DiffeoFields | None = None

    def extra_repr(self) -> str:
        return f"cut={self.cut_range}, T={self.T}, T_beta={self.T_beta}, interp={self.interp!r}"

    def generate_parameters(self, x: Tensor, generator: torch.Generator | None = None):
        """Sample per-sample (cut, T) and the fields for batch ``x``: a :class:`DiffeoFields`."""
        g = generator if generator is not None else self.generator
        single = x.ndim == 3
        B, size = (1 if single else x.shape[0]), tuple(x.shape[-2:])
        lo, hi = self.cut_range
        cut = torch.randint(lo, hi + 1, (B,), generator=g, device=g.device if g else "cpu").cpu()
        if isinstance(self.T, int | float):
            T = torch.full((B,), float(self.T), dtype=torch.float64)
        else:
            if self.T is None:
                t_lo, t_hi = temperature_range(size, cut.double())
            else:
                t_lo, t_hi = (torch.full((B,), float(v), dtype=torch.float64) for v in self.T)
            u = _beta_sample(*self.T_beta, B, g)
            T = t_lo + u * (t_hi - t_lo)
        # On the generator's device: apply moves the coefficients without waiting (see there).
        return sample_fields(B, size, T, cut, generator=g, dtype=x.dtype)

    def forward(
        self, x: Tensor, params: DiffeoFields | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        if params is None:
            params = self.generate_parameters(x, generator)
        self.last_params = params
        return apply(x, params, self.interp)


def _beta_sample(a: float, b: float, n: int, g: torch.Generator | None) -> Tensor:
    """Beta(a, b) variates from a generator: X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b).

    (``torch.distributions.Beta.sample`` takes no generator, hence this.)
    """
    if a == 1 and b == 1:
        return torch.rand(n, generator=g, dtype=torch.float64, device=g.device if g else "cpu").cpu()
    dev = g.device if g else "cpu"
    x = torch._standard_gamma(torch.full((n,), float(a), dtype=torch.float64, device=dev), g)
    y = torch._standard_gamma(torch.full((n,), float(b), dtype=torch.float64, device=dev), g)
    return (x / (x + y)).cpu()
