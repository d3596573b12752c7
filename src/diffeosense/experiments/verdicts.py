"""Verdicts that carry their uncertainty: each claim of the paper is judged on an interval.

A claim says that some number has a sign (``rho(eps, D) > 0``, a slope ``< 0``) and
sometimes a size ("R falls by a decade"). This run estimates the number with an interval at
``level`` (95 % by default) and the claim is

* **shown** when the interval excludes zero on the paper's side (and, for a magnitude claim,
  the estimate reaches the magnitude),
* **contradicted** when the interval excludes zero on the other side,
* **not shown** otherwise (the interval contains zero, or the magnitude is not reached);
* ``None`` (cannot tell) when there is no finite estimate.

Intervals come from a percentile bootstrap over the run's units (nets, or nets x seeds:
:func:`bootstrap`), or from a standard error with Student's t (:func:`t_interval`, for
fitted slopes). With few units the intervals are wide: 5 nets rarely *show* a correlation,
and the verdict says so instead of reading a sign.

>>> est = t_interval(-0.29, 0.04, dof=10)
>>> est.text(), judge(est, sign=-1)
('-0.29 [-0.38, -0.20]', 'shown')
>>> judge(t_interval(-0.09, 0.07, dof=2), sign=-1)
'not shown'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "judge", "bootstrap", "t_interval", "mean_over", "all_of", "SHOWN",
           "NOT_SHOWN", "CONTRADICTED", "VERDICTS"]

SHOWN, NOT_SHOWN, CONTRADICTED = "shown", "not shown", "contradicted"
VERDICTS = (SHOWN, NOT_SHOWN, CONTRADICTED)
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A number and its interval: ``value`` in ``[lo, hi]`` at ``level``; ``method`` says how
    the interval was made (``"bootstrap over 5 nets"``, ``"t, 8 dof"``)."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL
    method: str = ""

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.value, self.lo, self.hi))

    def text(self, fmt: str = "+.2f") -> str:
        """``"+0.39 [-0.52, +0.93]"``; ``"nan"`` pieces where undefined."""
        return f"{self.value:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def judge(est: Estimate, sign: int, *, magnitude: float | None = None) -> str | None:
    """The verdict on "``est`` has sign ``sign``" (+1 or -1), and, with ``magnitude``, "its
    size ``sign * value`` is at least ``magnitude``": shown, not shown, contradicted, or None
    when ``est`` is not finite (module docstring)."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    if not est.finite:
        return None
    lo, hi = (est.lo, est.hi) if sign > 0 else (-est.hi, -est.lo)  # the claim: x > 0
    if hi < 0:
        return CONTRADICTED
    if lo > 0 and (magnitude is None or sign * est.value >= magnitude):
        return SHOWN
    return NOT_SHOWN


def bootstrap(n_units: int, stat: Callable[[np.ndarray], float], *, what: str = "units",
              n_boot: int = 2000, level: float = LEVEL, seed: int = 0) -> Estimate:
    """``stat`` on all units, with a percentile bootstrap interval: ``stat(idx)`` is the
    statistic on the units ``idx`` (``[n_units]`` integer indices, repeats allowed), called on
    ``n_boot`` resamples drawn with replacement (a fixed ``seed``: the same interval every
    time). Resamples where it is not finite (a constant resample has no correlation) are
    left out; fewer than half finite gives a NaN interval. ``what`` names the units in
    ``method``.

    >>> x = np.arange(8.0)
    >>> e = bootstrap(8, lambda i: float(x[i].mean()), what="points")
    >>> e.value, e.lo < 3.5 < e.hi, e.method
    (3.5, True, 'bootstrap over 8 points (2000 resamples)')
    """
    value = float(stat(np.arange(n_units)))
    method = f"bootstrap over {n_units} {what} ({n_boot} resamples)"
    if n_units < 2:
        return Estimate(value, math.nan, math.nan, level, method)
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n_units, n_units)) for _ in range(n_boot)],
                     dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) < n_boot / 2:
        return Estimate(value, math.nan, math.nan, level, method)
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return Estimate(value, float(lo), float(hi), level, method)


def t_interval(value: float, se: float, dof: int, level: float = LEVEL) -> Estimate:
    """``value +- t_{dof} se``: the interval of a fitted slope (or a mean) from its standard
    error, with Student's t quantile for ``dof`` degrees of freedom (NaN for ``dof < 1``)."""
    from scipy.stats import t

    if dof < 1 or not (math.isfinite(value) and math.isfinite(se)):
        return Estimate(value, math.nan, math.nan, level, f"t, {dof} dof")
    q = float(t.ppf(0.5 + level / 2, dof))
    return Estimate(float(value), float(value - q * se), float(value + q * se), level,
                    f"t, {dof} dof")


def mean_over(values: Sequence[float], *, what: str = "units", level: float = LEVEL,
              seed: int = 0) -> Estimate:
    """The mean of ``values`` with its bootstrap interval over them (NaNs dropped first)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return Estimate(math.nan, math.nan, math.nan, level, f"bootstrap over 0 {what}")
    return bootstrap(len(v), lambda i: float(v[i].mean()), what=what, level=level, seed=seed)


def all_of(verdicts: Sequence[str | None]) -> str | None:
    """The verdict on a claim made of parts (each stride, D *and* G): contradicted if any part
    is, shown if every part is, None if no part could be judged, else not shown.

    >>> all_of(["shown", "shown"]), all_of(["shown", "not shown"]), all_of(["shown", None])
    ('shown', 'not shown', 'not shown')
    """
    known = [v for v in verdicts if v is not None]
    if not known:
        return None
    if CONTRADICTED in known:
        return CONTRADICTED
    return SHOWN if len(known) == len(verdicts) and all(v == SHOWN for v in known) \
        else NOT_SHOWN
