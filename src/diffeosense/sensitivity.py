"""Sensitivities to diffeomorphisms (D), to norm-matched noise (G) and R = D / G, layer by layer.

For the representation ``f`` at a layer (flattened over channels and space; science.md §1)::

    D = E_{x,tau} ||f(tau x) - f(x)||^2 / E_{x1,x2} ||f(x1) - f(x2)||^2
    G = E_{x,eta} ||f(x + eta) - f(x)||^2 / E_{x1,x2} ||f(x1) - f(x2)||^2
    R = D / G

with ``eta = xi / ||xi|| * ||tau x - x||`` matched to *each probe's own* diffeo (replayed, not
re-sampled). One forward pass of the concatenated batch ``[x; tau x; x + eta]`` gathers every
layer, and each layer is reduced as soon as it is produced, in cache-sized chunks of probes:
per-probe numerators ``||f(tau x) - f(x)||^2`` and the denominator ``2 * sum_j Var(f_j)`` from
shifted streaming sums (``_stats.BlockMoments``), both reduced in the working dtype
``promote(dtype, float32)`` and accumulated across probes in float64. For float32 layers the
relative error this allows is ~1e-8 per probe at a few hundred components and a few 1e-6 at
65536 (measured; ``_stats.StreamingMoments`` has the analysis), four orders of magnitude below
the statistical error of a few hundred probes. Memory is bounded by one batch plus O(d) per
layer, never O(n_probes * d): only the per-probe numerators (scalars; ``[N, C]`` with
``channels=True``) are kept, for medians and error bars.

Conventions (parameters, all tested):

* ``denominator``: ``"streaming"`` (default) = ``"pairs-excl-diag"`` = ``2 M2 / (N - 1)``, the
  unbiased estimate of ``E||f(x1) - f(x2)||^2``; ``"pairs-incl-diag"`` = ``2 M2 / N``, the
  authors' ``cdist(f, f).pow(2).mean()`` over all probes (i = j included): smaller by (N - 1) / N.
  Both equal the brute-force all-pairs value (``_stats.pairwise_denominator``) to rounding.
* ``statistic`` (the numerators ``num_D``, ``num_G``; ``Delta_i = f(tau x_i) - f(x_i)``):

  - ``"mean"`` (default, the authors' default): ``mean_i ||Delta_i||^2``;
  - ``"median"``: the median over probes of the per-probe squared norms, ``median_i ||Delta_i||^2``;
  - ``"component-median"``: the authors' median variant, ``sum_j median_i Delta_ij^2`` (per
    component j the median over probes of the squared difference, then the sum over
    components). It keeps every ``Delta_ij^2`` (float32): memory ``O(n_probes * d)`` per layer,
    not streaming; its standard errors are not estimated (NaN).

  Medians are torch's (the lower middle value for an even number of probes).
* ``batchnorm``: ``"eval"`` (default) measures the model as given, BatchNorm with its running
  statistics (at initialization mean 0, variance 1: BatchNorm is then an affine identity).
  ``"batch"`` is the authors' convention for untrained nets: every BatchNorm normalizes by the
  batch statistics (biased variance, running statistics neither used nor updated), computed
  *separately* for each of the three streams ``x``, ``tau x``, ``x + eta`` over the whole probe
  set, as their three batches of all probes did. The result therefore does not depend on
  ``batch_size`` (which is ignored: all ``n_probes`` probes go through in one forward pass, so
  memory grows with ``n_probes``) but it does depend on ``n_probes`` through the statistics
  (for small probe sets the normalization itself fluctuates; the authors used 500).
* ``probe_noise``: ``s > 0`` measures on noise-corrupted probes, ``x -> x + s xi / ||xi||`` per
  probe (:func:`diffeosense.data.gaussian_corruption`, the corruption of noisy training), for
  nets trained with input noise. The corrupted probe is the clean stream ``x``; the diffeo and
  the matched noise are applied to it.
* Randomness: one base seed is drawn from ``generator`` (or given as ``seed``); probe ``i`` gets
  its own CPU generator seeded with ``hash(base, i)``, from which its diffeo and then its noise
  direction are drawn. Results therefore do not depend on ``batch_size`` (up to the float32
  rounding of the model's batched kernels and of the sums over a batch's rows), and
  ``seed=result.config["seed"]`` replays a run.
* Standard errors (delta method): the numerator's from the per-probe values (mean: ``s / sqrt N``;
  median: bootstrap over probes), the denominator's from the spread of the denominators of fixed
  blocks of ``se_block`` probes (omitted with fewer than two blocks), assumed independent of the
  numerator (conservative when they correlate positively). ``R``'s SE comes from the paired
  per-probe values, where the denominator cancels.
* ``channels=True`` adds, for representations ``[C, *spatial]``, one row per channel (view
  ``"channel"``: ``f_c`` alone, its own denominator) and the channel-averaged representation
  (view ``"channel-mean"``: ``mean_c f_c`` at each site) next to the full one (view ``"full"``).

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
>>> shift = lambda x, g: torch.roll(x, 1, dims=-1)            # a user-supplied perturbation
>>> res = measure(net, torch.rand(32, 1, 8, 8), perturbation=shift, n_probes=32, batch_size=8)
>>> list(res.to_frame().layer)
['input', '0', '1', '2', 'output']
>>> bool((res.to_frame().R > 0).all())
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.profiler import record_function

from . import _io
from ._stats import DENOMINATORS, BlockMoments, StreamingMoments, ratio_se
from .layers import Layer, LayerSpec, LayerTap, select_layers

__all__ = ["MeasureConfig", "SensitivityResult", "measure", "aggregate"]

STATISTICS = ("mean", "median", "component-median")
BATCHNORMS = ("eval", "batch")
COLUMNS = ["layer", "depth", "kind", "view", "channel", "D", "G", "R", "D_se", "G_se", "R_se",
           "num_D", "num_G", "denominator", "n_probes", "size"]
_MASK64 = (1 << 64) - 1
# Working set of one reduction step per stream (see _ViewAcc.update): a few of these fit the
# L3 cache of a laptop or server CPU, and a step still covers many probes of a small layer.
CHUNK_BYTES = 4 << 20


@dataclass
class MeasureConfig:
    """Everything that determines a measurement (saved beside every result).

    ``seed`` is the base seed actually used: ``measure(..., seed=config.seed)`` replays the run.
    """

    layers: Any = "all"
    perturbation: Any = "diffeo"
    n_probes: int = 500
    batch_size: int = 128
    seed: int | None = None
    noise_match: str = "sample"
    noise_rectify: bool = False
    denominator: str = "streaming"
    statistic: str = "mean"
    channels: bool = False
    se_block: int = 50
    n_bootstrap: int = 200
    method: str = "auto"
    batchnorm: str = "eval"
    probe_noise: float = 0.0
    output: str | int | None = None
    drop_repeats: bool = False
    max_memory: int | str | None = "auto"


def _probe_seed(base: int, i: int) -> int:
    """splitmix64 of (base, i): independent, batch-size-free seeds for each probe."""
    z = (base + (i + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


# ------------------------------------------------------------------ data
def _iter_probes(data, n_probes: int, batch_size: int) -> Iterator[Tensor]:
    """Yield input batches ``[<=batch_size, ...]`` from the first ``n_probes`` of ``data``."""
    if isinstance(data, tuple | list) and data and isinstance(data[0], Tensor):
        data = data[0]  # (x, y)
    if isinstance(data, Tensor):
        for s in range(0, min(n_probes, data.shape[0]), batch_size):
            yield data[s:min(s + batch_size, n_probes)]
        return
    if isinstance(data, torch.utils.data.DataLoader) or (
            not hasattr(data, "__getitem__") and hasattr(data, "__iter__")):
        batches = (b for b in data)
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        def items():
            for i in range(min(len(data), n_probes)):
                yield data[i]
        batches = (_first(item).unsqueeze(0) for item in items())
    else:
        raise ValueError(f"data must be a tensor of inputs, an (x, y) tuple, a Dataset or a "
                         f"DataLoader; got {type(data).__name__}")
    buf: list[Tensor] = []
    have = taken = 0
    for b in batches:
        b = _first(b)
        if taken + have + b.shape[0] > n_probes:
            b = b[:n_probes - taken - have]
        buf.append(b)
        have += b.shape[0]
        while have >= batch_size:
            cat = torch.cat(buf)
            yield cat[:batch_size]
            taken += batch_size
            rest = cat[batch_size:]
            buf, have = ([rest] if rest.shape[0] else []), rest.shape[0]
        if taken + have >= n_probes:
            break
    if have:
        yield torch.cat(buf)


def _first(item) -> Tensor:
    if isinstance(item, dict):
        item = item.get("x", item.get("input", next(iter(item.values()))))
    if isinstance(item, tuple | list):
        item = item[0]
    if not isinstance(item, Tensor):
        item = torch.as_tensor(np.asarray(item))
    return item


# ------------------------------------------------------------------ perturbations
class _CannotCat(Exception):
    pass


def _cat_params(ps: list) -> Any:
    """Concatenate per-probe params (tensors with batch 1, in dataclasses/tuples/dicts)."""
    p0 = ps[0]
    if isinstance(p0, Tensor):
        if p0.dim() >= 1 and p0.shape[0] == 1 and all(
                isinstance(p, Tensor) and p.shape == p0.shape for p in ps):
            return torch.cat(ps)
        if all(isinstance(p, Tensor) and torch.equal(p, p0) for p in ps):
            return p0
        raise _CannotCat
    if dataclasses.is_dataclass(p0) and not isinstance(p0, type):
        vals = {f.name: _cat_params([getattr(p, f.name) for p in ps])
                for f in dataclasses.fields(p0) if f.init}
        return type(p0)(**vals)
    if isinstance(p0, dict):
        return {k: _cat_params([p[k] for p in ps]) for k in p0}
    if isinstance(p0, tuple | list):
        return type(p0)(_cat_params([p[i] for p in ps]) for i in range(len(p0)))
    if all(type(p) is type(p0) and p == p0 for p in ps):
        return p0
    raise _CannotCat


class _Perturber:
    """Per-probe sampling (batch-size independent) with a batched apply when params concatenate."""

    def __init__(self, perturbation, base_seed: int, match: str, rectify: bool,
                 probe_noise: float = 0.0):
        from .data.datasets import gaussian_corruption
        from .noise import matched_noise, sample_noise
        from .perturbations import as_perturbation

        self.p = as_perturbation(perturbation)
        self.base = base_seed
        self.match, self.rectify = match, rectify
        self.probe_noise, self._corrupt = float(probe_noise), gaussian_corruption
        self._sample_noise, self._matched_noise = sample_noise, matched_noise
        self.batched: bool | None = None  # decided on the first batch

    def __call__(self, x: Tensor, start: int) -> tuple[Tensor, Tensor, Tensor]:
        """``x: [B, ...]`` probes ``start .. start + B - 1`` -> ``(x, tau x, x + eta)``, with
        ``x`` first corrupted by ``probe_noise`` (no draw at all when it is 0)."""
        params, xis, xs = [], [], []
        for i in range(x.shape[0]):
            g = torch.Generator().manual_seed(_probe_seed(self.base, start + i))
            xi_ = self._corrupt(x[i:i + 1], self.probe_noise, g)
            xs.append(xi_)
            params.append(self.p.sample(xi_, g))
            xis.append(self._sample_noise(xi_, g, device="cpu"))  # moved once, in matched_noise
        if self.probe_noise > 0:
            x = torch.cat(xs)
        per_probe = None
        if self.batched is not False:
            try:
                x_tau = self.p.apply(x, _cat_params(params))
                if x_tau.shape != x.shape:
                    raise _CannotCat
                if self.batched is None:  # check once that batched apply == per-probe apply
                    per_probe = torch.cat([self.p.apply(x[i:i + 1], p)
                                           for i, p in enumerate(params)])
                    self.batched = bool(torch.allclose(x_tau, per_probe, rtol=1e-5, atol=1e-6))
            except _CannotCat:
                self.batched = False
            except Exception:  # noqa: BLE001 - a perturbation that cannot batch its params
                self.batched = False
        if not self.batched:
            x_tau = per_probe if per_probe is not None else torch.cat(
                [self.p.apply(x[i:i + 1], p) for i, p in enumerate(params)])
        if x_tau.shape != x.shape:
            raise ValueError(f"perturbation {getattr(self.p, 'name', self.p)!r} changed the shape "
                             f"{tuple(x.shape)} -> {tuple(x_tau.shape)}")
        eta = self._matched_noise(x, x_tau, xi=torch.cat(xis), match=self.match,
                                  rectify=self.rectify)
        return x, x_tau, x + eta


# ------------------------------------------------------------------ reduction
class _Scratch:
    """Work buffers of the reductions, reused across chunks, layers and batches: one per
    role, dtype and device, grown on demand (at most a few ``CHUNK_BYTES``)."""

    def __init__(self) -> None:
        self._bufs: dict[tuple, Tensor] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> Tensor:
        n, key = math.prod(shape), (role, dtype, device)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = self._bufs[key] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)


class _ViewAcc:
    """Accumulators of one view (full / channel-resolved / channel-mean) of one layer."""

    def __init__(self, se_block: int, components: bool = False):
        self.components = components
        self.ca: list[Tensor] = []  # per-component squared differences [B, G, m] (float32)
        self.cb: list[Tensor] = []
        self.blocks = BlockMoments(se_block)  # the clean stream's moments, in fixed blocks
        self.se_block = se_block
        self.a: list[Tensor] = []  # per-probe D numerators [B, G]
        self.b: list[Tensor] = []  # per-probe G numerators [B, G]
        self.moments = StreamingMoments()  # set by finish()
        self.block_dens: list[Tensor] = []

    def update(self, f: Tensor, B: int, scratch: _Scratch) -> Tensor:
        """``f: [3B, G, m]`` = clean, deformed, noisy; returns the finite check ``[3]`` (see
        :meth:`_LayerAcc.__call__`).

        One pass over ``f`` in chunks of consecutive probes of at most ``CHUNK_BYTES`` per
        stream, into reused work buffers: the differences and the shifted clean chunk stay in
        cache between the subtraction and the norm that reads them, and nothing the size of
        the layer is allocated (on CPU, fresh tensors of a few MB can cost their page faults
        at every step). The norms are torch's, over each probe's components, in the working
        dtype ``promote(dtype, float32)`` (see :class:`~diffeosense._stats.StreamingMoments`
        for what that allows), then squared and kept in float64. The blocks of ``se_block``
        probes are fixed by probe index (:class:`~diffeosense._stats.BlockMoments`), so no
        number depends on the chunking or on ``batch_size``.
        """
        wd = torch.promote_types(f.dtype, torch.float32)
        shape = f.shape[1:]
        step = max(1, CHUNK_BYTES // max(f[0].numel() * wd.itemsize, 1))
        pert = f[B:].reshape(2, B, *shape)  # deformed, noisy
        norms, seen = [], len(self.blocks.row_s2)
        for s in range(0, B, step):
            e = min(s + step, B)
            f0 = f[s:e].to(wd)
            # ||f(tau x) - f(x)|| and ||f(x + eta) - f(x)|| per probe and group, both at once.
            diff = torch.sub(pert[:, s:e].to(wd), f0,
                             out=scratch.get("diff", (2, e - s, *shape), wd, f.device))
            if self.components:
                sq = diff.to(torch.float32).pow(2)
                self.ca.append(sq[0])
                self.cb.append(sq[1])
            norms.append(torch.linalg.vector_norm(diff, dim=-1))
            self.blocks.update(f0, out=scratch.get("shifted", f0.shape, wd, f.device),
                               sums=scratch.get("sums", (self.blocks.pieces(e - s), f0[0].numel()),
                                                wd, f.device))
        ab = torch.cat(norms, dim=1).to(torch.float64).pow_(2)
        self.a.append(ab[0])
        self.b.append(ab[1])
        clean = torch.cat(self.blocks.row_s2[seen:]).sum()
        return torch.stack([clean, ab[0].sum(), ab[1].sum()])

    def finish(self) -> None:
        # The summaries (bootstrap, tables) run on the host: bring the accumulators there once.
        self.a = [t.cpu() for t in self.a]
        self.b = [t.cpu() for t in self.b]
        self.blocks.cpu()
        self.moments = self.blocks.moments()
        self.block_dens = self.blocks.block_pair_means()


class _LayerAcc:
    def __init__(self, layer: Layer, channels: bool, se_block: int, components: bool = False,
                 scratch: _Scratch | None = None):
        self.layer = layer
        self.split = channels and len(layer.shape) >= 2  # [C, *spatial]
        self.full = _ViewAcc(se_block, components)
        self.mean = _ViewAcc(se_block, components) if self.split else None
        self.scratch = scratch if scratch is not None else _Scratch()

    def __call__(self, t: Tensor, B: int) -> Tensor:
        """Reduce the layer's ``t: [3B, ...]``; returns sums ``[3]`` over (clean, deformed,
        noisy) of the clean moments and the two numerators: finite iff every stream was.
        Checked once per batch for all layers (:func:`_check_finite`), so that nothing here
        waits for the device."""
        G = t.shape[1] if self.split else 1
        check = self.full.update(t.reshape(3 * B, G, -1), B, self.scratch)
        if self.mean is not None:
            check = check + self.mean.update(t.mean(1).reshape(3 * B, 1, -1), B, self.scratch)
        return check


def _check_finite(checks: dict[str, Tensor]) -> None:
    """Raise for the first layer whose batch had NaN or Inf values (one host sync per batch)."""
    if not checks:
        return
    ok = torch.stack(list(checks.values())).isfinite()
    if bool(ok.all()):
        return
    for name, row in zip(checks, ok.cpu().tolist(), strict=True):
        if not all(row):
            # A bad clean stream spoils every difference; else say which perturbed one.
            streams = zip(("deformed", "noisy"), row[1:], strict=True)
            bad = ["clean"] if not row[0] else [p for p, fine in streams if not fine]
            raise ValueError(f"layer {name!r} has NaN or Inf values on the "
                             f"{'/'.join(bad)} inputs; check the model and the data")


def _stat(v: Tensor, statistic: str) -> Tensor:
    return v.mean(0) if statistic == "mean" else v.median(0).values


def _component_median(sq: list[Tensor]) -> Tensor:
    """``sum_j median_i Delta_ij^2`` per group: ``[N, G, m] -> [G]`` (float64)."""
    return torch.cat(sq).median(0).values.to(torch.float64).sum(-1)


def _summarize(acc: _ViewAcc, cfg: MeasureConfig, boot_gen: torch.Generator,
               layer: Layer) -> dict[str, Tensor]:
    """D, G, R and standard errors per group (``[G]`` tensors) of one view."""
    a, b = torch.cat(acc.a), torch.cat(acc.b)  # [N, G]
    N = a.shape[0]
    incl = cfg.denominator == "pairs-incl-diag"
    den = acc.moments.pair_mean(include_diag=incl)
    if cfg.statistic == "component-median":
        num_a, num_b = _component_median(acc.ca), _component_median(acc.cb)
    else:
        num_a, num_b = _stat(a, cfg.statistic), _stat(b, cfg.statistic)
    if cfg.statistic == "component-median":
        # Bootstrapping sum_j median_i over [N, d] is O(n_bootstrap N d): not estimated.
        rv_a = rv_b = r_se = torch.full_like(num_a, math.nan)
    elif cfg.statistic == "mean":
        rv_a = a.var(0) / N / num_a**2
        rv_b = b.var(0) / N / num_b**2
        r_se = ratio_se(a, b)
    else:
        idx = torch.randint(0, N, (cfg.n_bootstrap, N), generator=boot_gen)
        ba = torch.stack([a[i].median(0).values for i in idx])
        bb = torch.stack([b[i].median(0).values for i in idx])
        rv_a, rv_b = ba.var(0) / num_a**2, bb.var(0) / num_b**2
        r_se = (ba / bb).std(0)
    if len(acc.block_dens) >= 2:
        blocks = torch.stack(acc.block_dens)  # [K, G]
        scale = (N - 1) / N if incl else 1.0
        rv_den = blocks.var(0) / blocks.shape[0] / (blocks.mean(0) * scale) ** 2 * scale**2
    else:
        rv_den = torch.zeros_like(den)
    # A representation constant over the probes has no scale: D and G are undefined.
    # Float32 data cannot resolve a relative spread below ~1e-14: below 1e-20 it is rounding.
    const = (den <= 0) | (den <= 1e-20 * acc.moments.mean.pow(2).sum(-1))
    safe = torch.where(const, torch.ones_like(den), den)
    nan = torch.full_like(den, math.nan)
    D = torch.where(const, nan, num_a / safe)
    G = torch.where(const, nan, num_b / safe)
    R = torch.where(num_b > 0, num_a / torch.where(num_b > 0, num_b, 1.0), nan)
    out = {
        "D": D, "G": G, "R": R,
        "D_se": D.abs() * (rv_a + rv_den).sqrt(), "G_se": G.abs() * (rv_b + rv_den).sqrt(),
        "R_se": torch.where(num_b > 0, r_se, nan),
        "num_D": num_a, "num_G": num_b, "denominator": den, "const": const,
    }
    return out


# ------------------------------------------------------------------ result
@dataclass
class SensitivityResult:
    """D, G, R per layer (and view/channel), with the config and provenance that produced them.

    Attributes:
        table: tidy ``pandas.DataFrame``, one row per (layer, view, channel); columns
            ``layer, depth, kind, view, channel, D, G, R, D_se, G_se, R_se, num_D, num_G,
            denominator, n_probes, size``; ``view`` is ``full | channel | channel-mean`` and
            ``channel`` is -1 except on channel rows.
        config: the resolved :class:`MeasureConfig` as a dict, plus caller metadata.
        provenance: ``diffeosense.provenance.provenance()`` at measurement time.
        per_probe: ``{layer: (a, b)}`` per-probe numerators ``[N]`` of the full view (not saved).
    """

    table: Any
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    per_probe: dict | None = field(default=None, repr=False)

    def to_frame(self, view: str | None = None):
        """A copy of the table (only ``view`` rows if given)."""
        df = self.table.copy()
        return df[df.view == view].reset_index(drop=True) if view is not None else df

    def __getitem__(self, layer: str):
        """The full-view row of ``layer`` as a ``pandas.Series``."""
        df = self.table[(self.table.layer == layer) & (self.table.view == "full")]
        if df.empty:
            raise KeyError(f"no layer {layer!r}; layers: {', '.join(self.layers)}")
        return df.iloc[0]

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.table.layer))

    def _meta(self) -> dict:
        return {"format": "diffeosense.sensitivity/1", "config": self.config,
                "provenance": self.provenance}

    def save(self, path: str | Path) -> Path:
        """Write ``.csv``, ``.json`` or ``.parquet`` (atomic). CSV and Parquet get a sidecar
        ``<stem>.meta.json`` with the config and provenance; JSON holds everything."""
        return _io.write_table(path, self.table, self._meta())

    @classmethod
    def load(cls, path: str | Path) -> SensitivityResult:
        """Read a result written by :meth:`save`."""
        df, meta = _io.read_table(
            path, COLUMNS, ("D", "G", "R", "D_se", "G_se", "R_se", "num_D", "num_G",
                            "denominator"), what="diffeosense sensitivity result")
        missing = [c for c in ("layer", "view", "D", "G", "R") if c not in df]
        if missing:
            raise ValueError(f"{path} is not a sensitivity table: no column(s) {missing}")
        df["layer"] = df["layer"].astype(str)
        return cls(df, meta.get("config", {}), meta.get("provenance", {}))


# ------------------------------------------------------------------ measure
def _check_config(cfg: MeasureConfig) -> None:
    if cfg.denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {DENOMINATORS}, got {cfg.denominator!r}")
    if cfg.statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {cfg.statistic!r}")
    if cfg.n_probes < 2:
        raise ValueError(f"n_probes must be >= 2 (the denominator compares probes), got "
                         f"{cfg.n_probes}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.batchnorm not in BATCHNORMS:
        raise ValueError(f"batchnorm must be one of {BATCHNORMS} ('eval': running statistics, "
                         f"the model as given; 'batch': each stream normalized by its own "
                         f"batch statistics, the authors' convention at init), got "
                         f"{cfg.batchnorm!r}")
    if not (cfg.probe_noise >= 0 and math.isfinite(cfg.probe_noise)):
        raise ValueError(f"probe_noise is the L2 norm of the probes' corruption and must be a "
                         f"finite number >= 0, got {cfg.probe_noise}")
    if cfg.se_block < 2:
        raise ValueError(f"se_block must be >= 2, got {cfg.se_block}")
    if cfg.max_memory not in (None, "auto"):
        from ._memory import parse_bytes

        parse_bytes(cfg.max_memory)  # a clear error before any work


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _shape_error(model: nn.Module, x: Tensor, err: Exception) -> ValueError:
    first = next((m for m in model.modules()
                  if hasattr(m, "in_channels") or hasattr(m, "in_features")), None)
    hint = ""
    if first is not None:
        if hasattr(first, "in_channels"):
            hint = f" The first layer {first} expects {first.in_channels} input channels " \
                   f"(inputs [B, {first.in_channels}, ...])."
        else:
            hint = f" The first layer {first} expects {first.in_features} input features."
    return ValueError(f"the model cannot take the data: inputs have shape {tuple(x.shape)} "
                      f"(batch first).{hint} ({type(err).__name__}: {err})")


def measure(model: nn.Module, data, *args: Any, config: MeasureConfig | None = None,
            **overrides: Any) -> SensitivityResult:
    """Measure D, G and R of ``model`` at the requested layers on the first ``n_probes`` inputs.

    The options are keywords (below), or a :class:`MeasureConfig` ``config`` (e.g. the one
    saved beside a result, to replay it) whose fields the explicit keywords override:
    ``measure(model, x, config=c, seed=1)`` is ``measure(model, x, **{**asdict(c), "seed": 1})``.

    Args:
        model: any ``nn.Module`` taking ``x: [B, C, H, W]`` (or any ``[B, ...]`` the
            perturbation accepts). Measured in eval mode under ``no_grad``; every submodule's
            mode is restored afterwards and parameters are never modified.
        data: a tensor of inputs ``[N, ...]``, an ``(x, y)`` tuple, a ``Dataset`` (items ``x``
            or ``(x, y)``) or a ``DataLoader``; the first ``n_probes`` inputs are the probes.
        config: the measurement options as one :class:`MeasureConfig` (default: the keywords'
            defaults).
        layers: ``"all"``, a kind preset (``"modules"``, ``"conv+activation"``), a list of names,
            or a predicate ``Layer -> bool`` (see :mod:`diffeosense.layers`).
        perturbation: a :class:`~diffeosense.perturbations.Perturbation`, a callable
            ``fn(x, generator) -> x'`` or a name (``"diffeo"``, ``"diffeo:cut=3,displacement=1"``).
        n_probes, batch_size: probes, and probes per forward pass (3 * batch_size images go
            through the model at once). Results do not depend on ``batch_size``.
        generator, seed: the randomness (a base seed is drawn from ``generator``); default seed 0.
        device: where the model runs (default: where its parameters are); the model is moved
            there for the measurement and back afterwards.
        noise_match, noise_rectify: conventions of :func:`diffeosense.noise.matched_noise`
            (``"batch"`` matching depends on the batch composition, hence on ``batch_size``).
        denominator: ``"streaming" | "pairs-incl-diag" | "pairs-excl-diag"`` (module docstring).
        statistic: ``"mean"`` or ``"median"`` of the per-probe numerators ``||Delta_i||^2``, or
            ``"component-median"``, the authors' ``sum_j median_i Delta_ij^2``.
        channels: also the channel-resolved and channel-mean views.
        se_block, n_bootstrap: blocks of probes for the denominator's SE; bootstrap resamples
            for the median's SE.
        method: layer discovery, ``"auto" | "fx" | "hooks"``.
        batchnorm: ``"eval"`` (running statistics, the model as given) or ``"batch"`` (each of
            ``x``, ``tau x``, ``x + eta`` normalized by its own statistics over all probes; the
            authors' convention at initialization; ``batch_size`` is then ignored).
        probe_noise: L2 norm ``s`` of the Gaussian corruption of every probe (0: clean probes).
        output: for a model with several outputs, the one measured: a dict key or a tuple
            index. Default: a dict's ``"out"`` entry, else its first value; a tuple's or
            list's first element; a warning when that default chose among several tensors.
            Recorded in the result's config.
        max_memory: the memory the measurement may take on its device: bytes or a size
            (``"4GB"``); ``"auto"`` (default): half the memory the device has free now;
            None: no limit. The batch size is lowered (never raised) until the estimated peak
            (:mod:`diffeosense._memory`: from the layer shapes, nothing extra is run) fits
            80 % of it; the batch size used is in the result's config, the estimate
            too (``peak_memory_estimate``), and with ``progress`` both are printed with the
            estimated time after the first batch. Results do not depend on it (as for
            ``batch_size``).
        drop_repeats: drop the rows of a layer whose D and G equal (relative 1e-6) those of
            the layer before it (a flatten, a BatchNorm at initialization, the last linear
            layer before ``output``): the later one goes, except ``output``, which is kept in
            place of the layer it repeats. The config's ``repeats_dropped`` maps each dropped
            layer to the one it repeats.
        progress: show a tqdm bar.
        meta: extra entries for the saved config (data set...); ``"model"`` defaults to the
            spec the model was created from, else its class name.

    Returns:
        :class:`SensitivityResult`.
    """
    if config is None:
        config = MeasureConfig()
    elif not isinstance(config, MeasureConfig):
        raise TypeError(f"config must be a MeasureConfig, got {type(config).__name__}")
    names = list(inspect.signature(_measure).parameters)[2:]
    if len(args) > _N_POSITIONAL:
        raise TypeError(f"measure() takes at most {_N_POSITIONAL} positional options "
                        f"({', '.join(names[:_N_POSITIONAL])}), got {len(args)}")
    given = dict(zip(names, args, strict=False))
    twice = sorted(set(given) & set(overrides))
    unknown = sorted(set(overrides) - set(names))
    if twice or unknown:
        raise TypeError(f"measure() got {'unknown' if unknown else 'repeated'} option(s) "
                        f"{', '.join(unknown or twice)}; known: {', '.join(names)}")
    return _measure(model, data, **{**dataclasses.asdict(config), **given, **overrides})


_N_POSITIONAL = 4  # layers, perturbation, n_probes, batch_size


def _measure(
    model: nn.Module,
    data,
    layers: LayerSpec = "all",
    perturbation: Any = "diffeo",
    n_probes: int = 500,
    batch_size: int = 128,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    noise_match: str = "sample",
    noise_rectify: bool = False,
    denominator: str = "streaming",
    statistic: str = "mean",
    channels: bool = False,
    se_block: int = 50,
    n_bootstrap: int = 200,
    method: str = "auto",
    batchnorm: str = "eval",
    probe_noise: float = 0.0,
    output: str | int | None = None,
    drop_repeats: bool = False,
    max_memory: int | str | None = "auto",
    progress: bool = False,
    meta: dict | None = None,
) -> SensitivityResult:
    """:func:`measure` with its options as keywords."""
    from ._validate import check_device
    from .provenance import provenance

    if seed is None:
        seed = 0 if generator is None else int(
            torch.randint(0, 2**62, (1,), generator=generator).item())
    cfg = MeasureConfig(
        layers=layers if isinstance(layers, str) else
        (list(layers) if not callable(layers) else getattr(layers, "__name__", "predicate")),
        perturbation=_describe(perturbation), n_probes=int(n_probes), batch_size=int(batch_size),
        seed=int(seed), noise_match=noise_match, noise_rectify=bool(noise_rectify),
        denominator=denominator, statistic=statistic, channels=bool(channels),
        se_block=int(se_block), n_bootstrap=int(n_bootstrap), method=method,
        batchnorm=batchnorm, probe_noise=float(probe_noise), output=output,
        drop_repeats=bool(drop_repeats), max_memory=max_memory)
    _check_config(cfg)
    if cfg.batchnorm == "batch":
        cfg.batch_size = cfg.n_probes  # one forward pass: statistics over all probes per stream
    perturber = _Perturber(perturbation, cfg.seed, noise_match, noise_rectify, cfg.probe_noise)
    # Every result names its model, also when measured from Python without meta: the spec a
    # model was built from (models.create_model records it), else its class.
    meta = {"model": getattr(model, "diffeosense_spec", None) or type(model).__name__,
            **(meta or {})}
    home = _model_device(model)
    device = check_device("device", device) if device is not None else home
    modes = {m: m.training for m in model.modules()}
    batches = _iter_probes(data, cfg.n_probes, cfg.batch_size)
    try:
        first = next(batches)
    except StopIteration:
        raise ValueError("data holds no probes") from None
    if not first.is_floating_point():
        # A uint8/int/bool image is not what the model was trained on (normalized floats):
        # refuse rather than measure a cast that the model never saw.
        raise ValueError(
            f"measure needs floating-point inputs (normalized as for training), got dtype "
            f"{first.dtype}; convert first, e.g. x.float() / 255 then normalize"
        )
    bar = None
    try:
        model.to(device)
        model.eval()
        with torch.no_grad():
            try:
                with record_function("diffeosense.measure.setup"):
                    tap = LayerTap(model, first[:2].to(device), method, output)
            except (RuntimeError, TypeError) as e:
                raise _shape_error(model, first, e) from e
            chosen = select_layers(tap.layers, layers)
            components = cfg.statistic == "component-median"
            plan = _memory_plan(model, tap, chosen, first, cfg, device)
            fits = _fitting_batch(plan, cfg) if plan is not None else first.shape[0]
            if fits < first.shape[0]:
                # Re-cut the probes into the batches that fit (the same batches as a run asked
                # for that batch size: consecutive probes), before any is measured.
                cfg.batch_size = fits
                batches = _iter_probes(_chain(first, batches), cfg.n_probes, cfg.batch_size)
                first = next(batches)
            scratch = _Scratch()
            accs = {layer.name: _LayerAcc(layer, cfg.channels, cfg.se_block, components,
                                          scratch) for layer in chosen}
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=cfg.n_probes, unit="probe", desc="measure")
            start = 0
            for x in _chain(first, batches):
                if x.shape[1:] != first.shape[1:]:
                    raise ValueError(f"probe batch has shape {tuple(x.shape)}, expected "
                                     f"[B, {', '.join(map(str, first.shape[1:]))}]")
                B = x.shape[0]
                x = x.to(device=device, dtype=torch.get_default_dtype()
                         if not x.is_floating_point() else x.dtype)
                with record_function("diffeosense.measure.perturb"):
                    x, x_tau, x_eta = perturber(x, start)
                    xs = torch.cat([x, x_tau, x_eta])

                checks: dict[str, Tensor] = {}

                def sink(name: str, t: Tensor, B=B, checks=checks) -> None:
                    with record_function("diffeosense.measure.reduce"):
                        checks[name] = accs[name](t, B)

                try:
                    with _batchnorm_mode(model, cfg.batchnorm, streams=3), \
                            record_function("diffeosense.measure.forward"):
                        tap(xs, sink, accs.keys())
                except RuntimeError as e:
                    raise _shape_error(model, x, e) from e
                with record_function("diffeosense.measure.check"):
                    _check_finite(checks)
                if bar is not None:
                    if start == 0 and plan is not None:
                        bar.write(plan.summary(cfg.batch_size, cfg.n_probes, len(chosen),
                                               bar.format_dict["elapsed"]))
                    bar.update(B)
                start += B
    finally:
        if bar is not None:
            bar.close()
        for m, mode in modes.items():
            m.training = mode
        model.to(home)
    if start < 2:
        raise ValueError(f"only {start} probe(s) in the data; the denominator needs at least 2")
    if start < cfg.n_probes:
        warnings.warn(f"data holds only {start} probes (n_probes={cfg.n_probes} asked); "
                      f"measured on {start}", stacklevel=2)
    if plan is not None:
        meta = {**meta, "peak_memory_estimate": plan.peak(cfg.batch_size)}
    with record_function("diffeosense.measure.summaries"):
        return _result(accs, cfg, start, tap.method, meta, provenance())


def _fitting_batch(plan, cfg: MeasureConfig) -> int:
    """The batch size that fits ``plan.budget``; with the automatic budget (half the free
    memory) a measurement that does not fit even one probe at a time is not refused: it
    runs one probe at a time, with a warning (the explicit ``max_memory`` refuses)."""
    try:
        return plan.batch_size(plan.budget, cfg.batch_size)
    except ValueError as e:
        if cfg.max_memory != "auto":
            raise
        warnings.warn(f"{e}. With max_memory='auto' the measurement goes on one probe at a "
                      f"time; set max_memory to what it may take to silence this",
                      stacklevel=4)
        return 1


def _memory_plan(model: nn.Module, tap: LayerTap, chosen, first: Tensor, cfg: MeasureConfig,
                 device: torch.device):
    """The :class:`~diffeosense._memory.MemoryPlan` of this measurement under
    ``cfg.max_memory`` (None: no budget; and with ``batchnorm="batch"``, whose one batch of
    all probes cannot be split, only the check that it fits)."""
    from ._memory import HEADROOM, default_budget, format_bytes, parse_bytes, plan_memory

    if cfg.max_memory is None:
        return None
    budget = default_budget(torch.device(device)) if cfg.max_memory == "auto" \
        else parse_bytes(cfg.max_memory)
    tensors = list(model.parameters()) + list(model.buffers())
    plan = plan_memory(tap.layers, chosen, param_bytes=sum(t.numel() * t.element_size()
                                                           for t in tensors),
                       element_bytes=first.element_size(), n_probes=cfg.n_probes,
                       channels=cfg.channels, chunk_bytes=CHUNK_BYTES,
                       components=cfg.statistic == "component-median").with_budget(budget)
    if cfg.batchnorm == "batch" and plan.batch_size(budget, cfg.n_probes) < cfg.n_probes:
        raise ValueError(
            f"batchnorm='batch' sends all {cfg.n_probes} probes through in one pass, an "
            f"estimated {format_bytes(plan.peak(cfg.n_probes))}, over max_memory "
            f"{format_bytes(budget)} (with its {HEADROOM:.0%} headroom); use fewer probes, "
            f"fewer layers, or a larger max_memory")
    return plan


def _signature() -> inspect.Signature:
    """``measure``'s signature as introspection shows it: its options, then ``config``."""
    sig = inspect.signature(_measure)
    config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation="MeasureConfig | None")
    return sig.replace(parameters=[*sig.parameters.values(), config])


measure.__signature__ = _signature()  # what callers (and sweep files) may pass


@contextlib.contextmanager
def _batchnorm_mode(model: nn.Module, mode: str, streams: int) -> Iterator[None]:
    """With ``mode == "batch"``, every BatchNorm module of ``model`` normalizes each of the
    ``streams`` equal chunks of its batch by that chunk's own statistics (biased variance, as in
    training mode), without reading or updating its running statistics. The modules' own
    ``forward`` is restored on exit."""
    if mode != "batch":
        yield
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def per_stream(m: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
        return torch.cat([
            nn.functional.batch_norm(c, None, None, m.weight, m.bias, training=True,
                                     momentum=0.0, eps=m.eps)
            for c in x.chunk(streams)])

    try:
        for m in bns:
            m.forward = functools.partial(per_stream, m)  # instance attribute shadows the class's
        yield
    finally:
        for m in bns:
            m.__dict__.pop("forward", None)


def _chain(first: Tensor, rest: Iterable[Tensor]) -> Iterator[Tensor]:
    yield first
    yield from rest


def _describe(p) -> Any:
    if isinstance(p, str):
        return p
    if hasattr(p, "config"):
        try:
            return {"name": getattr(p, "name", type(p).__name__), **p.config()}
        except Exception:  # noqa: BLE001 - description only
            pass
    return getattr(p, "__qualname__", None) or type(p).__name__


def _result(accs: dict[str, _LayerAcc], cfg: MeasureConfig, N: int, method: str,
            meta: dict | None, prov: dict) -> SensitivityResult:
    import pandas as pd

    boot = torch.Generator().manual_seed(_probe_seed(cfg.seed, -7))
    rows, per_probe, constant = [], {}, []
    for name, acc in accs.items():
        layer = acc.layer
        views = [("full", acc.full)] + ([("channel-mean", acc.mean)] if acc.mean else [])
        for view, v in views:
            v.finish()
            # The full representation sums the groups (channels) of the accumulator.
            a, b = torch.cat(v.a), torch.cat(v.b)
            tot = _summarize_total(v, a, b, cfg, boot)
            size = layer.size if view == "full" else layer.size // max(layer.shape[0], 1)
            rows.append(_row(layer, view, -1, tot, N, size))
            if view == "full":
                per_probe[name] = (a.sum(1).numpy(), b.sum(1).numpy())
                if bool(tot["const"].item()):
                    constant.append(name)
                if acc.split:
                    s = _summarize(v, cfg, boot, layer)
                    G = a.shape[1]
                    for c in range(G):
                        rows.append(_row(layer, "channel", c,
                                         {k: t[c] for k, t in s.items()}, N, layer.size // G))
    if constant:
        warnings.warn(f"representation constant over the probes at layer(s) "
                      f"{', '.join(constant)}: the denominator is 0, so D and G are undefined "
                      f"(NaN)", stacklevel=3)
    df = pd.DataFrame(rows, columns=COLUMNS)
    config = {**dataclasses.asdict(cfg), "n_measured": N, "tap_method": method, **(meta or {})}
    if cfg.drop_repeats:
        dropped = _repeats(df)
        df = df[~df.layer.isin(list(dropped))].reset_index(drop=True)
        per_probe = {k: v for k, v in per_probe.items() if k not in dropped}
        config["repeats_dropped"] = dropped
    return SensitivityResult(df, _io.to_jsonable(config), prov, per_probe)


def _repeats(table, rtol: float = 1e-6) -> dict[str, str]:
    """``{dropped layer: the layer it repeats}``: consecutive layers (full view, in forward
    order) whose D and G agree to ``rtol``; the later one is dropped, but ``output`` is kept
    and the layer before it dropped instead."""
    full = table[table.view == "full"]
    names, D, G = full.layer.tolist(), full.D.to_numpy(), full.G.to_numpy()
    out: dict[str, str] = {}
    for i in range(1, len(names)):
        same = all(abs(v[i] - v[i - 1]) <= rtol * abs(v[i - 1]) for v in (D, G))
        if same:
            if names[i] == "output":
                out[names[i - 1]] = names[i]
            else:
                out[names[i]] = names[i - 1]
    return out


def _summarize_total(v: _ViewAcc, a: Tensor, b: Tensor, cfg: MeasureConfig,
                     boot: torch.Generator) -> dict[str, Tensor]:
    """The whole representation: sum the groups of every per-probe and moment quantity."""
    tot = _ViewAcc(v.se_block)
    tot.a, tot.b = [a.sum(1, keepdim=True)], [b.sum(1, keepdim=True)]
    if v.components:
        tot.ca = [torch.cat(v.ca).flatten(1).unsqueeze(1)]
        tot.cb = [torch.cat(v.cb).flatten(1).unsqueeze(1)]
    m = v.moments
    tot.moments = StreamingMoments(m.shift.reshape(1, -1))
    tot.moments._add(m.n, m.s1.reshape(1, -1), m.s2.sum().reshape(1))
    tot.block_dens = [d.sum().reshape(1) for d in v.block_dens]
    s = _summarize(tot, cfg, boot, None)
    return {k: t[0] for k, t in s.items()}


def _row(layer: Layer, view: str, channel: int, s: dict[str, Tensor], N: int, size: int) -> dict:
    row = {"layer": layer.name, "depth": layer.depth, "kind": layer.kind, "view": view,
           "channel": channel}
    for k in ("D", "G", "R", "D_se", "G_se", "R_se", "num_D", "num_G", "denominator"):
        row[k] = float(s[k])
    row.update(n_probes=N, size=int(size))
    return row


# ------------------------------------------------------------------ across seeds
def aggregate(results: list[SensitivityResult]) -> SensitivityResult:
    """Combine runs (seeds) by geometric means, as in the literature.

    For each (layer, view, channel): ``D = exp(mean_s log D_s)`` (same for G, R) and
    ``D_se = D * std_s(log D_s) / sqrt(S)`` (delta method on the log scale; NaN for one run);
    ``num_D, num_G, denominator`` are arithmetic means, ``n_probes`` the total. The config lists
    the runs' configs under ``"runs"``.
    """
    import pandas as pd

    if not results:
        raise ValueError("aggregate needs at least one result")
    keys = ["layer", "depth", "kind", "view", "channel"]
    df = pd.concat([r.table.assign(_run=i) for i, r in enumerate(results)], ignore_index=True)
    S = len(results)
    out = []
    for key, g in df.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        for q in ("D", "G", "R"):
            logs = np.log(g[q].to_numpy(dtype=float))
            m = float(np.exp(logs.mean()))
            row[q] = m
            row[f"{q}_se"] = m * float(logs.std(ddof=1)) / math.sqrt(len(logs)) \
                if len(logs) > 1 else math.nan
        for q in ("num_D", "num_G", "denominator"):
            row[q] = float(g[q].mean())
        row["n_probes"] = int(g["n_probes"].sum())
        row["size"] = int(g["size"].iloc[0])
        out.append(row)
    table = pd.DataFrame(out, columns=COLUMNS).sort_values(["depth", "view", "channel"],
                                                           kind="stable").reset_index(drop=True)
    config = {"aggregate": "geometric-mean", "n_runs": S, "runs": [r.config for r in results]}
    return SensitivityResult(table, config, results[0].provenance)

