"""Streaming statistics for the sensitivity engine (float64, memory bounded by one batch).

The denominator of D and G is the mean squared distance between two probes,

    E_{x1,x2} ||f(x1) - f(x2)||^2 = 2 * sum_j Var(f_j),

accumulated in one streaming pass (shifted sums, see :class:`StreamingMoments`):
O(N d) time and O(d) memory instead of the O(N^2 d) of all pairs. Over N probes,

    (1 / N^2)      sum_{i, j}  ||f_i - f_j||^2 = 2 M2 / N        (pairs incl. i = j: cdist().mean())
    (1 / N(N - 1)) sum_{i != j} ||f_i - f_j||^2 = 2 M2 / (N - 1)  (pairs excl. i = j: unbiased)

with ``M2 = sum_i ||f_i - mean||^2``; the two conventions differ by the factor (N - 1) / N.

>>> import torch
>>> f = torch.randn(10, 1, 7, dtype=torch.float64)
>>> s = StreamingMoments()
>>> for chunk in f.split(3):
...     s.update(chunk)
>>> bool(torch.allclose(s.pair_mean(include_diag=False), pairwise_denominator(f[:, 0], False)))
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["StreamingMoments", "BlockMoments", "pairwise_denominator", "DENOMINATORS"]

DENOMINATORS = ("streaming", "pairs-incl-diag", "pairs-excl-diag")


class StreamingMoments:
    """Running count, shifted sums and per-group sum of squared deviations ``M2: [G]``.

    Samples arrive as ``x: [n, G, m]`` (G groups, e.g. channels, of m components each); ``M2`` is
    summed within each group, so ``pair_mean`` gives one denominator per group (sum them for the
    whole representation).

    Shifted-data algorithm: with a fixed shift ``K`` (the first sample seen, close to the data,
    so no catastrophic cancellation), keep ``S1 = sum_i (f_i - K)`` and
    ``S2 = sum_i ||f_i - K||^2`` in float64; then ``M2 = S2 - ||S1||^2 / n``. Each batch is one
    subtraction and two reductions in the working dtype ``promote(dtype, float32)`` (float32
    for float16/bfloat16/float32 representations, float64 for float64), whose results are
    accumulated in float64. What that costs in accuracy (float32, unit roundoff
    ``u = 6e-8``): ``f_i - K`` is rounded once (relative ``u``); each probe's ``||f_i - K||``
    is a torch norm over its ``m`` components (measured relative error ~2e-6 at
    ``m = 65536``, ~4e-7 at 4096); ``S1`` sums at most one batch of rows in float32 before
    float64 takes over. With the shift a sample of the data, ``S2 / M2`` is about 2, so ``M2``
    inherits a relative error of a few ``1e-6``: four orders of magnitude below the
    statistical error of a denominator from a few hundred probes. Merging two accumulators
    with the same shift is a sum (used for fixed blocks of probes).
    """

    def __init__(self, shift: Tensor | None = None) -> None:
        self.n = 0
        self.shift = shift
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Add a batch ``x: [n, G, m]`` (any float dtype; see the class doc for the dtype)."""
        if x.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = x[0].to(torch.float64, copy=True)  # not a view: it would keep x alive
        y, s2 = _shifted(x, self.shift.to(_working(x.dtype)))
        ones = torch.ones(1, x.shape[0], dtype=y.dtype, device=y.device)
        # Column sums as a matrix product: much faster than y.sum(0) on CPU.
        s1 = (ones @ y.reshape(x.shape[0], -1)).reshape(y.shape[1:]).to(torch.float64)
        self._add(x.shape[0], s1, s2.sum(0))

    def _add(self, n: int, s1: Tensor, s2: Tensor) -> None:
        if self.n == 0:
            self.s1, self.s2 = s1.clone(), s2.clone()
        else:
            self.s1 += s1
            self.s2 += s2
        self.n += n

    def merge(self, other: StreamingMoments) -> None:
        """Add another accumulator that used the same shift."""
        if other.n:
            if self.shift is None:
                self.shift = other.shift
            elif other.shift is not self.shift and not torch.equal(other.shift, self.shift):
                raise ValueError("can only merge accumulators that share their shift")
            self._add(other.n, other.s1, other.s2)

    @property
    def mean(self) -> Tensor:
        """Mean ``[G, m]``."""
        return self.shift + self.s1 / self.n

    @property
    def m2(self) -> Tensor:
        """Sum of squared deviations from the mean, per group ``[G]`` (clamped at 0)."""
        return (self.s2 - self.s1.pow(2).sum(-1) / self.n).clamp_min(0)

    def pair_mean(self, include_diag: bool = False) -> Tensor:
        """Mean squared distance between probes, per group ``[G]`` (see module docstring)."""
        if self.n < 2:
            raise ValueError(f"a denominator needs at least 2 probes, got {self.n}")
        return 2.0 * self.m2 / (self.n if include_diag else self.n - 1)


def _working(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reductions run in: ``promote(dtype, float32)``."""
    return torch.promote_types(dtype, torch.float32)


def _shifted(x: Tensor, shift: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``y = x - shift`` in the working dtype (into ``out`` if given) and each row's
    ``||y_i||^2`` per group (``[n, G]``, float64): one subtraction and one norm."""
    y = torch.sub(x.to(shift.dtype), shift, out=out)
    return y, torch.linalg.vector_norm(y, dim=-1).to(torch.float64).pow_(2)


class BlockMoments:
    """:class:`StreamingMoments` of all rows and of fixed blocks of ``block`` consecutive rows.

    Rows ``x_i: [G, m]`` arrive in order, in updates of any size; rows ``k * block`` to
    ``(k + 1) * block - 1`` form block ``k`` whatever the updates, so the blocks (and the
    standard error of the denominator taken from their spread) do not depend on how the rows
    were batched. Kept: each row's ``||x_i - K||^2`` (``[N, G]`` float64, N scalars per
    group), the running ``S1`` of all rows and of the open block (``[G, m]`` float64), and
    ``||S1_b||^2`` of each closed block; each update is one subtraction, one norm and one
    matrix product (the per-block column sums) over the rows, in the working dtype.

    >>> import torch
    >>> f = torch.randn(10, 1, 7, dtype=torch.float64)
    >>> bm = BlockMoments(block=4)
    >>> for chunk in f.split(3):
    ...     bm.update(chunk)
    >>> [round(float(d), 6) for d in bm.block_pair_means()] == [
    ...     round(float(pairwise_denominator(f[i:i + 4, 0], False)), 6) for i in (0, 4)]
    True
    """

    def __init__(self, block: int) -> None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.block = block
        self.n = 0
        self.shift: Tensor | None = None
        self._k: Tensor | None = None
        self.s1: Tensor | None = None  # S1 of the closed blocks, float64 [G, m]
        self.open_s1: Tensor | None = None  # S1 of the open block
        self.row_s2: list[Tensor] = []
        self.closed_sq: list[Tensor] = []

    def update(self, x: Tensor, out: Tensor | None = None, sums: Tensor | None = None) -> None:
        """Add rows ``x: [n, G, m]`` (any float dtype).

        ``out`` (x's shape) and ``sums`` (``[pieces, G * m]``, pieces = the blocks the rows
        touch), in the working dtype, are optional work buffers for the shifted rows and their
        column sums: with them an update allocates nothing of the layer's size (the running
        sums are accumulated in place).
        """
        n = x.shape[0]
        if n == 0:
            return
        if self.shift is None:
            self.shift = x[0].to(torch.float64, copy=True)  # not a view: it would keep x alive
            self._k = x[0].to(_working(x.dtype), copy=True)
            self.s1 = torch.zeros_like(self.shift)
            self.open_s1 = torch.zeros_like(self.shift)
        y, s2 = _shifted(x, self._k, out)
        self.row_s2.append(s2)
        # The update's rows cut at block boundaries: one matrix product gives every piece's
        # column sums (an indicator row per piece).
        cuts = self._cuts(n)
        starts = [0] + cuts[:-1]
        if len(cuts) == 1:
            ind = torch.ones(1, n, dtype=y.dtype, device=y.device)
        else:  # built on the device from Python numbers: no host-to-device copy
            r = torch.arange(n, device=y.device)
            ind = torch.stack([(r >= s) & (r < e) for s, e in zip(starts, cuts, strict=True)])
            ind = ind.to(y.dtype)
        pieces = torch.mm(ind, y.reshape(n, -1), out=None if sums is None else sums[:len(cuts)])
        for piece, (s, e) in zip(pieces, zip(starts, cuts, strict=True), strict=True):
            self.open_s1.add_(piece.view(self.open_s1.shape))  # float64 += working dtype
            self.n += e - s
            if self.n % self.block == 0:
                self.closed_sq.append(torch.linalg.vector_norm(self.open_s1, dim=-1).pow_(2))
                self.s1.add_(self.open_s1)
                self.open_s1.zero_()

    def _cuts(self, n: int) -> list[int]:
        """Where the next ``n`` rows' pieces end (at block boundaries, and at ``n``)."""
        first = self.block - self.n % self.block
        return list(range(min(first, n), n, self.block)) + [n]

    def pieces(self, n: int) -> int:
        """How many blocks the next ``n`` rows touch (the rows of ``sums`` an update needs)."""
        return len(self._cuts(n))

    def moments(self) -> StreamingMoments:
        """All rows so far as one :class:`StreamingMoments` (mean, ``M2``, pair means)."""
        m = StreamingMoments(self.shift)
        if self.n:
            m._add(self.n, self.s1 + self.open_s1, torch.cat(self.row_s2).sum(0))
        return m

    def block_pair_means(self) -> list[Tensor]:
        """The unbiased pair mean (``2 M2 / (block - 1)``) of each closed block, ``[G]`` each;
        an open last block is left out."""
        k = len(self.closed_sq)
        if not k:
            return []
        s2 = torch.cat(self.row_s2)[: k * self.block].reshape(k, self.block, -1).sum(1)
        m2 = (s2 - torch.stack(self.closed_sq) / self.block).clamp_min(0)
        return list(2.0 * m2 / max(self.block - 1, 1))

    def cpu(self) -> BlockMoments:
        """Move the accumulators to the host (in place; returns self)."""
        for name in ("shift", "_k", "s1", "open_s1"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.cpu())
        self.row_s2 = [t.cpu() for t in self.row_s2]
        self.closed_sq = [t.cpu() for t in self.closed_sq]
        return self


def pairwise_denominator(f: Tensor, include_diag: bool = True) -> Tensor:
    """Brute-force mean of ``||f_i - f_j||^2`` over all pairs, ``f: [N, d]``; float64 ``cdist``.

    The published approach (cdist over one batch of probes, i = j included). O(N^2 d).

    >>> pairwise_denominator(torch.tensor([[0.0], [2.0]]), include_diag=True).item()
    2.0
    """
    f = f.reshape(f.shape[0], -1).to(torch.float64)
    N = f.shape[0]
    if N < 2:
        raise ValueError(f"a denominator needs at least 2 probes, got {N}")
    d2 = torch.cdist(f, f).pow(2).sum()
    return d2 / (N * N if include_diag else N * (N - 1))


def ratio_se(a: Tensor, b: Tensor) -> Tensor:
    """Delta-method standard error of ``mean(a) / mean(b)`` from paired samples ``a, b: [N, ...]``.

    ``Var(a_bar / b_bar) ~ r^2 (s_a^2 / a_bar^2 + s_b^2 / b_bar^2 - 2 s_ab / (a_bar b_bar)) / N``.
    """
    N = a.shape[0]
    ma, mb = a.mean(0), b.mean(0)
    if N < 2:
        return torch.full_like(ma, math.nan)
    va, vb = a.var(0), b.var(0)
    cab = ((a - ma) * (b - mb)).sum(0) / (N - 1)
    r = ma / mb
    rel = va / ma**2 + vb / mb**2 - 2 * cab / (ma * mb)
    return r.abs() * rel.clamp_min(0).sqrt() / math.sqrt(N)
