r"""Spatial pooling vs channel pooling: tell them apart in any trained CNN (science.md §3).

A layer becomes stable to small diffeomorphisms in two ways. **Spatial pooling**: its filters
are smooth (homogeneous) over their F x F patch, so they average the patch. **Channel
pooling**: filters that are deformed copies of each other are summed by the next layer. This
module measures both.

Filter spectra. Let ``L = D - A`` be the graph Laplacian of a kernel's grid (4-neighbour,
open boundary; a path graph for 1D kernels). Its eigenbasis is known in closed form: on a path
of n nodes ``lambda_k = 2 - 2 cos(pi k / n)`` with eigenvector ``v_k(i) ~ cos(pi k (i + 1/2) / n)``
(k = 0 .. n-1, the DCT-II); on a grid ``n_1 x n_2 (x ...)`` the eigenvalues add and the
eigenvectors multiply (Kronecker product). ``lambda = 0`` is the homogeneous filter. For one
filter slice ``w`` (an (out, in) pair, flattened to ``[K]``) and the eigenspace ``E_lambda``
(degenerate eigenvalues grouped: ``|lambda - lambda'| < 1e-9``)::

    p_lambda(w) = ||P_lambda w||^2,    sum_lambda p_lambda(w) = ||w||^2   (Parseval)
    power_lambda = mean over slices of p_lambda(w),   fraction_lambda = power_lambda / sum power

A white filter (i.i.d. entries, as at initialization) has ``fraction_lambda = m_lambda / K``
(``m``: multiplicity), so 1/9 on the homogeneous mode of a 3 x 3 kernel.

Channel shuffling. In every convolution of a deep copy, the input-channel index of the weights
is permuted by one seeded permutation per layer, ``W'[o, j] = W[o, pi(j)]`` (optionally the
output channels too, with the bias): each filter keeps its spatial shape (and spectrum); the
learned channel combinations are destroyed. Grouped convolutions are permuted inside each group
(a depthwise layer is then unchanged). BatchNorm statistics and affine parameters stay as they
are, as in the authors' analysis: the shuffled net is not re-normalized. Linear layers are
left alone, also those that mix channels at every position (ConvNeXt's pointwise ``Linear``
on channels-last tensors): the published tables shuffle convolutions only, and a 1x1
convolution, the usual channel mixer, is a convolution and is shuffled; a Linear layer on
channels would need the tensor's layout (which dimension is the channel) that a module does
not declare. A net in which nothing can be shuffled (a fully connected net, one with only
depthwise or single-channel convolutions) is reported as not measured: ``channel_fraction``
and ``spatial_fraction`` NaN at every layer, the reason in ``note``, and a warning.

The report (:func:`pooling_report`) sets D, G, R of the original net beside K shuffled copies
(same probes, same diffeos and noise: paired) and defines, per layer, the share of the
stability that shuffling destroys (``channel_fraction``); see :func:`pooling_report`.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
>>> spectra = filter_spectra(net)
>>> spectra.homogeneous().layer.tolist()
['0', '2']
>>> twin = shuffle_channels(net, generator=torch.Generator().manual_seed(0))
>>> bool(torch.equal(twin[0].weight, net[0].weight))    # one input channel: nothing to permute
True
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import _io

__all__ = [
    "laplacian_eigenbasis",
    "filter_spectrum",
    "filter_spectra",
    "FilterSpectra",
    "ChannelPermutation",
    "sample_permutations",
    "shuffle_channels",
    "pooling_report",
    "PoolingReport",
]

_EIG_TOL = 1e-9
_LOG_TOL = 1e-9  # differences of ln D below this are rounding, not stability
SPECTRA_COLUMNS = ["layer", "depth", "conv", "module", "kernel", "groups", "in_channels",
                   "out_channels", "n_slices", "eigenvalue", "multiplicity", "power", "fraction",
                   "note"]
REPORT_COLUMNS = [
    "layer", "depth", "kind",
    "D", "D_shuffled", "D_shuffled_min", "D_shuffled_max",
    "G", "G_shuffled", "G_shuffled_min", "G_shuffled_max",
    "R", "R_shuffled", "R_shuffled_min", "R_shuffled_max",
    "D_channel_mean", "D_channel_mean_shuffled",
    "stability", "stability_shuffled", "channel_fraction", "spatial_fraction",
    "homogeneous_fraction", "n_shuffled", "note",
]
_SENS_EXTRA = ["variant", "copy"]


# ------------------------------------------------------------------ Laplacian eigenbasis
@functools.lru_cache(maxsize=64)
def _path_basis(n: int) -> tuple[Tensor, Tensor]:
    """Path graph of ``n`` nodes: eigenvalues ``[n]`` and orthonormal eigenvectors ``[n, n]``."""
    k = torch.arange(n, dtype=torch.float64)
    lam = 2.0 - 2.0 * torch.cos(math.pi * k / n)
    i = torch.arange(n, dtype=torch.float64)
    V = torch.cos(math.pi * torch.outer(i + 0.5, k) / n)
    V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    lam[0] = 0.0  # exactly
    return lam, V


def laplacian_eigenbasis(shape: int | tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of the graph Laplacian of a kernel grid (4-neighbour, open boundary).

    Args:
        shape: the kernel's spatial shape, ``F`` or ``(F,)`` (path graph), ``(H, W)``, ...

    Returns:
        ``(eigenvalues [K], eigenvectors [K, K])`` with ``K = prod(shape)``, eigenvalues
        ascending, eigenvectors orthonormal in the columns and indexed like
        ``kernel.reshape(-1)`` (row-major). Closed form: path eigenvalues
        ``2 - 2 cos(pi k / n)`` added over the axes, DCT-II vectors multiplied (Kronecker).

    >>> lam, V = laplacian_eigenbasis((3, 3))
    >>> [round(v, 6) for v in lam.tolist()]
    [0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 6.0]
    >>> bool(torch.allclose(V.T @ V, torch.eye(9, dtype=V.dtype)))
    True
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"kernel shape must be a non-empty tuple of positive sizes, got {shape}")
    lam = torch.zeros(1, dtype=torch.float64)
    V = torch.ones(1, 1, dtype=torch.float64)
    for n in shape:
        ln, vn = _path_basis(n)
        lam = (lam[:, None] + ln[None, :]).reshape(-1)
        V = torch.kron(V, vn)
    order = torch.argsort(lam, stable=True)
    return lam[order], V[:, order]


@functools.lru_cache(maxsize=64)
def _eigenspaces(shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(V [K, K], group index of each eigenvector [K], eigenvalue [E], multiplicity [E])``."""
    lam, V = laplacian_eigenbasis(shape)
    group = torch.zeros(len(lam), dtype=torch.long)
    for i in range(1, len(lam)):
        group[i] = group[i - 1] + int(lam[i] - lam[i - 1] > _EIG_TOL)
    E = int(group[-1]) + 1
    mult = torch.bincount(group, minlength=E)
    values = torch.zeros(E, dtype=torch.float64).index_add_(0, group, lam) / mult
    return V, group, values, mult


@dataclass(frozen=True)
class _Spectrum:
    eigenvalue: Tensor      # [E]
    multiplicity: Tensor    # [E]
    power: Tensor           # [S, E]


def filter_spectrum(weight: Tensor, spatial_dims: int | None = None) -> _Spectrum:
    """Per-slice projections of a convolution weight on the Laplacian eigenspaces of its grid.

    Args:
        weight: ``[out, in / groups, *kernel]`` (any number of leading dims; the last
            ``spatial_dims`` are the kernel, default ``weight.dim() - 2``).

    Returns:
        ``eigenvalue [E]`` (distinct, ascending), ``multiplicity [E]`` and
        ``power [S, E] = ||P_lambda w_s||^2`` for every slice ``s`` (float64), where
        ``S = prod(leading dims)``; ``power.sum(1) == ||w_s||^2`` (Parseval).

    >>> sp = filter_spectrum(torch.ones(1, 1, 3, 3))           # homogeneous filter
    >>> sp.power[0, 0].item(), sp.power[0, 1:].abs().max().item() < 1e-12
    (9.0, True)
    """
    if spatial_dims is None:
        spatial_dims = weight.dim() - 2
    if spatial_dims < 1 or spatial_dims > weight.dim():
        raise ValueError(f"weight of shape {tuple(weight.shape)} has no {spatial_dims} kernel "
                         f"dimensions")
    kernel = tuple(weight.shape[weight.dim() - spatial_dims:])
    V, group, values, mult = _eigenspaces(kernel)
    w = weight.detach().to(device="cpu", dtype=torch.float64).reshape(-1, V.shape[0])
    c2 = (w @ V).pow_(2)
    power = torch.zeros(w.shape[0], len(values), dtype=torch.float64).index_add_(1, group, c2)
    return _Spectrum(values, mult, power)


# ------------------------------------------------------------------ walking convolutions
def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and not m.transposed


def _convs(model: nn.Module, example: Tensor | None, method: str) -> list[tuple[str, int, nn.Module]]:
    """``(name, depth, module)`` of every convolution module: forward order with ``example``
    (depths as in :func:`diffeosense.measure`), else registration order (depth = position)."""
    if example is None:
        convs = [(n, m) for n, m in model.named_modules() if _is_conv(m)]
        return [(n, i + 1, m) for i, (n, m) in enumerate(convs)]
    from .layers import list_layers

    out, seen = [], set()
    modules = dict(model.named_modules())
    for layer in list_layers(model, example, method):
        if layer.kind != "conv":
            continue
        name = layer.name
        if name not in modules:  # a module called again ("conv_1"), or a functional conv
            base = re.sub(r"_\d+$", "", name)
            if base in seen or base not in modules:
                continue
            name = base
        m = modules[name]
        if _is_conv(m) and name not in seen:
            seen.add(name)
            out.append((name, layer.depth, m))
    return out


def _kernel_str(k: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in k)


def _group_note(m: nn.Module) -> str:
    if m.groups == 1:
        return ""
    if m.groups == m.in_channels:
        return f"depthwise (groups={m.groups}): one slice per channel; unchanged by shuffling"
    return f"grouped (groups={m.groups}): shuffled inside each group"


# ------------------------------------------------------------------ spectra result
@dataclass
class FilterSpectra:
    """Filter spectra of every convolution of a model (one row per layer x eigenvalue).

    Attributes:
        table: tidy ``pandas.DataFrame`` with columns ``layer, depth, conv, module, kernel,
            groups, in_channels, out_channels, n_slices, eigenvalue, multiplicity, power,
            fraction, note``. ``power`` is the mean squared projection per eigenspace over the
            ``n_slices`` (out, in) slices, ``fraction`` its share of the layer's total.
            Layers without spatial extent (1 x 1) have one row with NaN eigenvalue and a note.
        config: how the table was made (``order``: ``"forward"`` or ``"registration"``).
        provenance: ``diffeosense.provenance.provenance()``.
    """

    table: Any
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    FORMAT = "diffeosense.spectra/1"

    def to_frame(self):
        """A copy of the table."""
        return self.table.copy()

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.table.layer))

    def homogeneous(self):
        """Per layer: ``fraction`` on eigenvalue 0 and ``white = 1 / K``, the value of a filter
        with i.i.d. entries (columns ``layer, depth, kernel, fraction, white``; NaN for 1 x 1)."""
        import pandas as pd

        rows = []
        for layer, g in self.table.groupby("layer", sort=False):
            zero = g[g.eigenvalue == 0.0]
            K = int(np.prod([int(s) for s in str(g.kernel.iloc[0]).split("x")]))
            rows.append({"layer": layer, "depth": int(g.depth.iloc[0]),
                         "kernel": g.kernel.iloc[0],
                         "fraction": float(zero.fraction.iloc[0]) if len(zero) else math.nan,
                         "white": 1.0 / K if K > 1 else math.nan})
        return pd.DataFrame(rows, columns=["layer", "depth", "kernel", "fraction", "white"])

    def _meta(self) -> dict:
        return {"format": self.FORMAT, "config": self.config, "provenance": self.provenance}

    def save(self, path: str | Path) -> Path:
        """Write ``.csv``, ``.json`` or ``.parquet`` (atomic; CSV and Parquet get a
        ``<stem>.meta.json`` sidecar), as :meth:`SensitivityResult.save`."""
        return _io.write_table(path, self.table, self._meta())

    @classmethod
    def load(cls, path: str | Path) -> FilterSpectra:
        """Read a table written by :meth:`save`."""
        df, meta = _io.read_table(path, SPECTRA_COLUMNS,
                                  ("eigenvalue", "power", "fraction"), what="filter spectra")
        df["layer"] = df["layer"].astype(str)
        df["note"] = _text(df["note"])
        return cls(df, meta.get("config", {}), meta.get("provenance", {}))


def _text(col) -> list[str]:
    """A text column read back from CSV (empty cells come back as NaN)."""
    return ["" if isinstance(v, float) and math.isnan(v) else str(v) for v in col]


def filter_spectra(model: nn.Module, example: Tensor | None = None,
                   method: str = "auto") -> FilterSpectra:
    """Project every convolution filter of ``model`` on its grid's Laplacian eigenvectors.

    Args:
        model: any ``nn.Module``; its ``nn.Conv1d/2d/3d`` modules are walked (transposed
            convolutions and functional convolutions are not).
        example: an input batch ``[B, ...]``: convolutions are then taken in forward order and
            ``depth`` is their depth among all layers, as in :func:`diffeosense.measure` (a
            module called twice is reported once). Without it: registration order,
            ``depth`` = position among the convolutions.
        method: layer discovery with ``example`` (``"auto" | "fx" | "hooks"``).

    Returns:
        :class:`FilterSpectra`. Per layer and eigenvalue ``lambda`` (degenerate ones grouped):
        ``power = mean_s ||P_lambda w_s||^2`` over the slices ``w_s = W[o, i]`` (``[*kernel]``)
        and ``fraction = power / sum_lambda power``. Grouped and depthwise convolutions have
        ``out * in / groups`` slices (noted); 1 x 1 convolutions are kept as one row with NaN
        spectrum and the note ``"1x1: no spatial extent"``.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1., -1.], [-1., 1.]]).expand(2, 1, 2, 2))
    >>> filter_spectra(net).to_frame()[["eigenvalue", "fraction"]].round(6).values.tolist()
    [[0.0, 0.0], [2.0, 0.0], [4.0, 1.0]]
    """
    import pandas as pd

    from .provenance import provenance

    rows = []
    for i, (name, depth, m) in enumerate(_convs(model, example, method)):
        kernel = tuple(m.weight.shape[2:])
        base = {"layer": name, "depth": int(depth), "conv": i + 1, "module": type(m).__name__,
                "kernel": _kernel_str(kernel), "groups": int(m.groups),
                "in_channels": int(m.in_channels), "out_channels": int(m.out_channels),
                "n_slices": int(m.weight.shape[0] * m.weight.shape[1])}
        note = _group_note(m)
        if int(np.prod(kernel)) == 1:
            rows.append({**base, "eigenvalue": math.nan, "multiplicity": 0, "power": math.nan,
                         "fraction": math.nan,
                         "note": "; ".join(filter(None, ["1x1: no spatial extent", note]))})
            continue
        sp = filter_spectrum(m.weight)
        power = sp.power.mean(0)
        total = float(power.sum())
        frac = power / total if total > 0 else torch.full_like(power, math.nan)
        for e in range(len(sp.eigenvalue)):
            rows.append({**base, "eigenvalue": round(float(sp.eigenvalue[e]), 12),
                         "multiplicity": int(sp.multiplicity[e]), "power": float(power[e]),
                         "fraction": float(frac[e]), "note": note})
    table = pd.DataFrame(rows, columns=SPECTRA_COLUMNS)
    config = {"order": "registration" if example is None else "forward", "method": method,
              "eigenvalue_tolerance": _EIG_TOL}
    return FilterSpectra(table, config, provenance())


# ------------------------------------------------------------------ channel shuffling
@dataclass(frozen=True)
class ChannelPermutation:
    """The permutation applied to one convolution: ``W'[o, j] = W[sigma(o), pi_g(j)]``.

    Attributes:
        inputs: ``[groups, in / groups]``, row ``g`` a permutation of ``range(in / groups)``
            applied to the weights of the output channels of group ``g``.
        outputs: ``[out]`` permutation ``sigma`` of the output channels (inside each group),
            or None (outputs left in place).
    """

    inputs: Tensor
    outputs: Tensor | None = None

    @property
    def is_identity(self) -> bool:
        ident = torch.arange(self.inputs.shape[1]).expand_as(self.inputs)
        out_ok = self.outputs is None or torch.equal(self.outputs, torch.arange(len(self.outputs)))
        return bool(torch.equal(self.inputs, ident)) and out_ok


def _group_perm(n_groups: int, size: int, generator: torch.Generator) -> Tensor:
    return torch.stack([torch.randperm(size, generator=generator) for _ in range(n_groups)])


def sample_permutations(model: nn.Module, generator: torch.Generator, first_layer: bool = True,
                        outputs: bool = False) -> dict[str, ChannelPermutation]:
    """One random :class:`ChannelPermutation` per convolution (registration order).

    ``first_layer=False`` leaves the first convolution out (its inputs are the image's
    channels). The draws use ``generator`` only: the same generator state gives the same
    permutations.

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, groups=2))
    >>> p = sample_permutations(net, torch.Generator().manual_seed(0))
    >>> {k: tuple(v.inputs.shape) for k, v in p.items()}
    {'0': (1, 3), '1': (2, 2)}
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError("sample_permutations needs an explicit torch.Generator (e.g. "
                         "torch.Generator().manual_seed(0))")
    perms = {}
    convs = [(n, m) for n, m in model.named_modules() if _is_conv(m)]
    for i, (name, m) in enumerate(convs):
        if i == 0 and not first_layer:
            continue
        g = m.groups
        inp = _group_perm(g, m.in_channels // g, generator)
        out = None
        if outputs:
            out = (_group_perm(g, m.out_channels // g, generator)
                   + (torch.arange(g) * (m.out_channels // g))[:, None]).reshape(-1)
        perms[name] = ChannelPermutation(inp, out)
    return perms


def shuffle_channels(model: nn.Module, generator: torch.Generator | None = None,
                     first_layer: bool = True, outputs: bool = False,
                     permutations: dict[str, ChannelPermutation] | None = None) -> nn.Module:
    """A deep copy of ``model`` whose convolutions have their channel index permuted.

    In each convolution, for output channel ``o`` of group ``g``:
    ``W'[o, j] = W[sigma(o), pi_g(j)]`` (``j`` the input channel inside the group) and
    ``b'[o] = b[sigma(o)]``, ``sigma`` the identity unless ``outputs=True``. Each filter slice
    keeps its spatial shape, so every layer's spectrum is unchanged; the channel combinations
    are scrambled. BatchNorm statistics and affine parameters, linear layers and the original
    ``model`` are left untouched.

    Args:
        generator: draws the permutations (:func:`sample_permutations`).
        first_layer, outputs: see :func:`sample_permutations`.
        permutations: replay given permutations (``{conv name: ChannelPermutation}``) instead
            of drawing; convolutions not named are left as they are.

    >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3))
    >>> twin = shuffle_channels(net, torch.Generator().manual_seed(1))
    >>> sorted(twin[2].weight[0].flatten().tolist()) == sorted(net[2].weight[0].flatten().tolist())
    True
    """
    if permutations is None:
        if generator is None:
            raise ValueError("shuffle_channels needs generator= (a seeded torch.Generator) or "
                             "permutations= (from sample_permutations)")
        permutations = sample_permutations(model, generator, first_layer, outputs)
    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    with torch.no_grad():
        for name, p in permutations.items():
            m = modules.get(name)
            if m is None or not _is_conv(m):
                raise ValueError(f"no convolution {name!r} in the model; convolutions: "
                                 f"{[n for n, mm in modules.items() if _is_conv(mm)]}")
            _apply_permutation(m, p, name)
    return twin


def _apply_permutation(m: nn.Module, p: ChannelPermutation, name: str) -> None:
    g = m.groups
    W = m.weight  # [out, in / g, *k]
    out_per = W.shape[0] // g
    if tuple(p.inputs.shape) != (g, W.shape[1]):
        raise ValueError(f"permutation of {name!r} has shape {tuple(p.inputs.shape)}, the "
                         f"layer needs [groups, in / groups] = [{g}, {W.shape[1]}]")
    for row in p.inputs:
        if not torch.equal(torch.sort(row).values, torch.arange(len(row))):
            raise ValueError(f"permutation of {name!r} is not a permutation: {row.tolist()}")
    # Index of the weight's input dimension for every output channel: [out, in / g].
    idx = p.inputs.to(W.device).repeat_interleave(out_per, dim=0)
    idx = idx.view(*idx.shape, *([1] * (W.dim() - 2))).expand_as(W)
    new = torch.gather(W, 1, idx)
    if p.outputs is not None:
        sigma = p.outputs.to(W.device)
        if sorted(sigma.tolist()) != list(range(W.shape[0])) or \
                not torch.equal(sigma // out_per, torch.arange(W.shape[0], device=W.device)
                                // out_per):
            raise ValueError(f"output permutation of {name!r} must permute range({W.shape[0]}) "
                             f"inside each of the {g} groups")
        new = new[sigma]
        if m.bias is not None:
            m.bias.copy_(m.bias[sigma].clone())
    W.copy_(new)


# ------------------------------------------------------------------ the report
@dataclass
class PoolingReport:
    """What :func:`pooling_report` returns.

    Attributes:
        table: one row per layer (columns ``REPORT_COLUMNS``): D, G, R of the original net,
            the geometric mean and range over the shuffled copies, the channel-mean view,
            ``stability``, ``channel_fraction``, ``spatial_fraction``,
            ``homogeneous_fraction`` (conv layers) and a note.
        sensitivity: tidy D, G, R rows (``view`` full and channel-mean) of the original
            (``variant="original", copy=-1``) and of each copy (``"shuffled", copy=k``), with the
            columns of :class:`~diffeosense.SensitivityResult` before them.
        spectra: :class:`FilterSpectra` of the model.
        config, provenance: the resolved settings (measurement config included) and versions.
    """

    table: Any
    sensitivity: Any
    spectra: FilterSpectra
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    FORMAT = "diffeosense.pooling/1"

    def to_frame(self):
        """A copy of the per-layer table."""
        return self.table.copy()

    def sensitivity_result(self, variant: str = "original", copy: int = -1):
        """The rows of one net as a :class:`~diffeosense.SensitivityResult` (for plotting)."""
        from .sensitivity import COLUMNS, SensitivityResult

        df = self.sensitivity
        sel = df[(df.variant == variant) & (df["copy"] == copy)]
        if sel.empty:
            raise ValueError(f"no rows for variant={variant!r}, copy={copy}")
        return SensitivityResult(sel[COLUMNS].reset_index(drop=True), self.config,
                                 self.provenance)

    def _meta(self, what: str) -> dict:
        return {"format": f"{self.FORMAT}:{what}", "config": self.config,
                "provenance": self.provenance}

    def save(self, directory: str | Path, prefix: str = "", fmt: str = "csv") -> list[Path]:
        """Write ``{prefix}pooling``, ``{prefix}sensitivity`` and ``{prefix}spectra`` tables
        (``fmt``: csv, json or parquet; atomic, with ``.meta.json`` sidecars) into
        ``directory``; returns the paths."""
        d = Path(directory)
        return [_io.write_table(d / f"{prefix}pooling.{fmt}", self.table, self._meta("layers")),
                _io.write_table(d / f"{prefix}sensitivity.{fmt}", self.sensitivity,
                                self._meta("sensitivity")),
                self.spectra.save(d / f"{prefix}spectra.{fmt}")]

    @classmethod
    def load(cls, directory: str | Path, prefix: str = "", fmt: str = "csv") -> PoolingReport:
        """Read a report written by :meth:`save`."""
        from .sensitivity import COLUMNS

        d = Path(directory)
        num = tuple(c for c in REPORT_COLUMNS if c not in ("layer", "kind", "note", "depth",
                                                           "n_shuffled"))
        table, meta = _io.read_table(d / f"{prefix}pooling.{fmt}", REPORT_COLUMNS, num,
                                     what="pooling report")
        table["layer"] = table["layer"].astype(str)
        table["note"] = _text(table["note"])
        sens, _ = _io.read_table(d / f"{prefix}sensitivity.{fmt}", _SENS_EXTRA + COLUMNS,
                                 ("D", "G", "R", "D_se", "G_se", "R_se", "num_D", "num_G",
                                  "denominator"), what="pooling sensitivity table")
        sens["layer"] = sens["layer"].astype(str)
        spectra = FilterSpectra.load(d / f"{prefix}spectra.{fmt}")
        return cls(table, sens, spectra, meta.get("config", {}), meta.get("provenance", {}))


def _shuffle_seed(seed: int, k: int) -> int:
    """Seed of the k-th shuffled copy: independent of the probes' seeds (different hash)."""
    h = hashlib.sha256(f"diffeosense.pooling.shuffle/{seed}/{k}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _log_d(num: np.ndarray, den: np.ndarray, floor: float) -> np.ndarray:
    """``ln clip(num / den, floor, 1 / floor)`` with ``0 / 0 := 0`` (nothing moves: as stable as
    can be) and ``c / 0 := inf`` for ``c > 0`` (the probes coincide, the perturbation moves
    them); NaN only where ``num`` or ``den`` is."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(den > 0, num / np.where(den > 0, den, 1.0),
                     np.where(num > 0, np.inf, 0.0))
    d = np.where(np.isnan(num) | np.isnan(den), np.nan, d)
    return np.log(np.clip(d, floor, 1.0 / floor))


def _geo(values: np.ndarray) -> tuple[float, float, float]:
    v = values[np.isfinite(values) & (values > 0)]
    if not len(v):
        return math.nan, math.nan, math.nan
    return float(np.exp(np.log(v).mean())), float(v.min()), float(v.max())


def _pooling_table(original, shuffled: list, spectra: FilterSpectra | None, d_floor: float,
                   notes: dict[str, str] | None = None):
    """The per-layer table of :func:`pooling_report` from the measured results."""
    import pandas as pd

    full = original.to_frame("full")
    cm = original.to_frame("channel-mean").set_index("layer")
    sh_full = [s.to_frame("full").set_index("layer") for s in shuffled]
    sh_cm = [s.to_frame("channel-mean").set_index("layer") for s in shuffled]
    inp = full[full.kind == "input"]
    ref = _log_d(inp.num_D.to_numpy()[:1], inp.denominator.to_numpy()[:1], d_floor)[0] \
        if len(inp) else math.nan
    h = spectra.homogeneous() if spectra is not None else None
    homog = {} if h is None else dict(zip(h.layer, h.fraction, strict=True))
    rows = []
    for r in full.itertuples(index=False):
        row = {"layer": r.layer, "depth": int(r.depth), "kind": r.kind,
               "D": r.D, "G": r.G, "R": r.R}
        for q in ("D", "G", "R"):
            vals = np.array([s.at[r.layer, q] for s in sh_full if r.layer in s.index])
            row[f"{q}_shuffled"], row[f"{q}_shuffled_min"], row[f"{q}_shuffled_max"] = _geo(vals)
        row["D_channel_mean"] = float(cm.at[r.layer, "D"]) if r.layer in cm.index else math.nan
        vals = np.array([s.at[r.layer, "D"] for s in sh_cm if r.layer in s.index])
        row["D_channel_mean_shuffled"] = _geo(vals)[0]
        lo = _log_d(np.array([r.num_D]), np.array([r.denominator]), d_floor)[0]
        lo_sh = np.array([_log_d(np.array([s.at[r.layer, "num_D"]]),
                                 np.array([s.at[r.layer, "denominator"]]), d_floor)[0]
                          for s in sh_full if r.layer in s.index])
        lo_sh = lo_sh[np.isfinite(lo_sh)]
        stab = ref - lo
        stab_sh = ref - float(lo_sh.mean()) if len(lo_sh) else math.nan
        row["stability"], row["stability_shuffled"] = stab, stab_sh
        if math.isfinite(stab) and math.isfinite(stab_sh):
            # Below _LOG_TOL the logs are equal up to rounding (e.g. the mean of K equal logs).
            lost = stab - stab_sh if stab - stab_sh > _LOG_TOL else 0.0
            kept = stab_sh if stab_sh > _LOG_TOL else 0.0
            row["channel_fraction"] = lost / (lost + kept) if lost + kept > 0 else 0.0
            row["spatial_fraction"] = 1.0 - row["channel_fraction"]
        else:
            row["channel_fraction"] = row["spatial_fraction"] = math.nan
        row["homogeneous_fraction"] = float(homog.get(r.layer, math.nan))
        row["n_shuffled"] = int(len(lo_sh))
        row["note"] = (notes or {}).get(r.layer, "")
        rows.append(row)
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def pooling_report(model: nn.Module, data, *, n_shuffles: int = 3, seed: int = 0,
                   first_layer: bool = True, outputs: bool = False, layers="all",
                   perturbation: Any = "diffeo", n_probes: int = 500, batch_size: int = 128,
                   d_floor: float = 1e-12, device=None, progress: bool = False,
                   meta: dict | None = None, **measure_kw) -> PoolingReport:
    r"""Spectra, and D/G/R of the original net and of ``n_shuffles`` channel-shuffled copies.

    The original and every copy are measured with :func:`diffeosense.measure` on the same
    probes with the same diffeos and noise (``seed``), with ``channels=True`` (the full and
    the channel-mean views are kept). Copy ``k`` is :func:`shuffle_channels` with a generator
    seeded by a hash of ``(seed, k)``.

    Per layer ``k`` (full view), with ``l(D) = ln clip(D, d_floor, 1 / d_floor)`` where
    ``D = num_D / denominator`` and ``0 / 0 := 0`` (nothing moves), ``c / 0 := inf``::

        stability          S_k  = l(D_input) - l(D_k)          (original net)
        stability_shuffled S'_k = l(D_input) - mean_copies l(D'_k)
        lost = max(S_k - S'_k, 0)      kept = max(S'_k, 0)     (below 1e-9: 0, rounding)
        channel_fraction = lost / (lost + kept)   (0 when lost = kept = 0: nothing to share)
        spatial_fraction = 1 - channel_fraction

    ``channel_fraction`` is the share of the log-stability built up to layer ``k`` (relative
    to the input) that shuffling destroys, i.e. that is due to channel pooling; the rest
    survives shuffling and is due to spatial pooling. It lies in ``[0, 1]`` and is finite
    whenever the measurement is (D = 0 and undefined D, a representation constant over the
    probes, are handled by the clipping above); NaN only if no copy could be measured, or if
    the net holds nothing to shuffle (every copy is the net itself: not measured, with a
    warning and the reason in ``note``).

    Args:
        model: any ``nn.Module`` (see :func:`diffeosense.measure`).
        data: the probes (tensor, ``(x, y)``, Dataset or DataLoader).
        n_shuffles: K shuffled copies (0: spectra and the original only).
        seed: seeds the measurement and the permutations.
        first_layer, outputs: see :func:`shuffle_channels`.
        d_floor: clipping of D in the fractions.
        layers, perturbation, n_probes, batch_size, device, meta, ``**measure_kw``: passed to
            :func:`diffeosense.measure` (e.g. ``denominator``, ``noise_match``).
        progress: a tqdm bar over the shuffled copies.

    Returns:
        :class:`PoolingReport`.

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
    ...                     nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    >>> rep = pooling_report(net, torch.rand(16, 1, 16, 16), n_shuffles=2, n_probes=16)
    >>> bool(rep.to_frame().channel_fraction.between(0, 1).all())
    True
    """
    from .provenance import provenance
    from .sensitivity import COLUMNS, _iter_probes, measure

    if n_shuffles < 0:
        raise ValueError(f"n_shuffles must be >= 0, got {n_shuffles}")
    if not 0 < d_floor < 1:
        raise ValueError(f"d_floor must lie in (0, 1), got {d_floor}")
    if "channels" in measure_kw:
        raise ValueError("pooling_report always measures with channels=True")
    try:
        example = next(_iter_probes(data, 2, 2))
    except StopIteration:
        raise ValueError("data holds no probes") from None
    method = measure_kw.get("method", "auto")
    if not example.is_floating_point():
        example = example.to(torch.get_default_dtype())
    home = next((t.device for t in model.parameters()), torch.device("cpu"))
    spectra = filter_spectra(model, example.to(home), method=method)
    spectra.config.update(_io.to_jsonable(meta or {}))
    kw = dict(layers=layers, perturbation=perturbation, n_probes=n_probes,
              batch_size=batch_size, seed=seed, device=device, channels=True, **measure_kw)
    original = measure(model, data, meta=meta, **kw)
    shuffled, perm_notes = [], {}
    bar = None
    if progress and n_shuffles:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_shuffles, unit="copy", desc="shuffled copies")
    try:
        for k in range(n_shuffles):
            g = torch.Generator().manual_seed(_shuffle_seed(seed, k))
            perms = sample_permutations(model, g, first_layer, outputs)
            if k == 0:
                perm_notes = perms
            twin = shuffle_channels(model, permutations=perms)
            shuffled.append(measure(twin, data, meta=meta, **kw))
            del twin
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    notes = _layer_notes(model, spectra, perm_notes, n_shuffles, first_layer)
    table = _pooling_table(original, shuffled, spectra, d_floor, notes)
    if n_shuffles and not _shuffles_anything(model, perm_notes):
        # Every copy is the net itself: "no stability lost" would read as "all spatial
        # pooling" where nothing was tested.
        why = _NOTHING_TO_SHUFFLE
        table["channel_fraction"] = table["spatial_fraction"] = math.nan
        table["note"] = [f"{n}; {why}" if n else why for n in table["note"]]
        import warnings

        warnings.warn(f"pooling_report: {why}; channel_fraction and spatial_fraction are NaN "
                      f"at every layer", stacklevel=2)
    import pandas as pd

    frames = [original.table.assign(variant="original", copy=-1)]
    frames += [s.table.assign(variant="shuffled", copy=k) for k, s in enumerate(shuffled)]
    sens = pd.concat(frames, ignore_index=True)
    sens = sens[sens.view != "channel"][_SENS_EXTRA + COLUMNS].reset_index(drop=True)
    config = {"n_shuffles": int(n_shuffles), "seed": int(seed),
              "first_layer": bool(first_layer), "outputs": bool(outputs),
              "d_floor": float(d_floor),
              "shuffle_seeds": [_shuffle_seed(seed, k) for k in range(n_shuffles)],
              "batchnorm": "statistics and affine parameters kept (not re-normalized)",
              "measure": original.config}
    return PoolingReport(table, sens, spectra, _io.to_jsonable(config), provenance())


_NOTHING_TO_SHUFFLE = (
    "not measured: nothing to shuffle in this net (no convolution with two or more input "
    "channels per group; depthwise and single-channel convolutions stay unchanged, and Linear "
    "layers are never shuffled)")


def _shuffles_anything(model: nn.Module, perms: dict[str, ChannelPermutation]) -> bool:
    """Whether the permutations drawn for ``model`` can change it: some convolution has two
    or more input channels per group (or, with ``outputs``, output channels per group) to
    permute. A chance identity draw still counts: the layer was tested."""
    modules = dict(model.named_modules())
    for name, p in perms.items():
        m = modules.get(name)
        if p.inputs.shape[1] > 1:
            return True
        if p.outputs is not None and m is not None and m.out_channels // m.groups > 1:
            return True
    return False


def _layer_notes(model: nn.Module, spectra: FilterSpectra, perms: dict, n_shuffles: int,
                 first_layer: bool) -> dict[str, str]:
    """What shuffling did to each conv layer, in words (for the report's ``note`` column)."""
    notes = {}
    modules = dict(model.named_modules())
    for layer, g in spectra.table.groupby("layer", sort=False):
        name = layer if layer in modules else re.sub(r"_\d+$", "", layer)
        m = modules.get(name)
        parts = [str(g.note.iloc[0])] if str(g.note.iloc[0]) else []
        if n_shuffles and m is not None:
            p = perms.get(name)
            if p is None:
                parts.append("not shuffled (first layer)" if not first_layer else "not shuffled")
            elif p.inputs.shape[1] == 1 and p.outputs is None and m.groups == 1:
                parts.append("one input channel: unchanged by shuffling")
        notes[layer] = "; ".join(dict.fromkeys(parts))
    return notes
