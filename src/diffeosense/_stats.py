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

__all__ = ["StreamingMoments", "pairwise_denominator", "DENOMINATORS"]

DENOMINATORS = ("streaming", "pairs-incl-diag", "pairs-excl-diag")


class StreamingMoments:
    """Running count, shifted sums and per-group sum of squared deviations ``M2: [G]``.

    Samples arrive as ``x: [n, G, m]`` (G groups, e.g. channels, of m components each); ``M2`` is
    summed within each group, so ``pair_mean`` gives one denominator per group (sum them for the
    whole representation).

    Shifted-data algorithm in float64: with a fixed shift ``K`` (the first sample seen, close to
    the data, so no catastrophic cancellation), keep ``S1 = sum_i (f_i - K)`` and
    ``S2 = sum_i ||f_i - K||^2``; then ``M2 = S2 - ||S1||^2 / n``. Each batch costs one
    float64 pass plus two reductions; merging two accumulators with the same shift is a sum
    (used for fixed blocks of probes).
    """

    def __init__(self, shift: Tensor | None = None) -> None:
        self.n = 0
        self.shift = shift
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Add a batch ``x: [n, G, m]`` (any float dtype; differences taken in float64)."""
        n_b = x.shape[0]
        if n_b == 0:
            return
        if self.shift is None:
            self.shift = x[0].to(torch.float64)
        y = torch.sub(x, self.shift)  # promotes to float64 in one pass
        # Column sums as a matrix product: much faster than y.sum(0) on CPU.
        ones = torch.ones(1, n_b, dtype=y.dtype, device=y.device)
        s1 = (ones @ y.reshape(n_b, -1)).reshape(y.shape[1:])
        if y.shape[1] == 1:
            flat = y.reshape(-1)
            s2 = torch.dot(flat, flat).reshape(1)
        else:
            s2 = y.pow_(2).sum((0, 2))
        self._add(n_b, s1, s2)

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
