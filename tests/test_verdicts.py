"""Verdicts with intervals (diffeosense.experiments.verdicts): the three-way rule, and the
intervals against their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from diffeosense.experiments.verdicts import (
    Estimate,
    all_of,
    bootstrap,
    judge,
    mean_over,
    t_interval,
)


@pytest.mark.parametrize("lo, hi, sign, magnitude, want", [
    (0.1, 0.5, +1, None, "shown"),
    (-0.1, 0.5, +1, None, "not shown"),
    (-0.5, -0.1, +1, None, "contradicted"),
    (-0.5, -0.1, -1, None, "shown"),
    (0.1, 0.5, -1, None, "contradicted"),
    (-1.4, -1.1, -1, 1.0, "shown"),       # R falls by more than a decade (log10 < -1)
    (-0.6, -0.2, -1, 1.0, "not shown"),   # falls, but not by a decade
    (math.nan, 0.5, +1, None, None),
])
def test_judge(lo, hi, sign, magnitude, want):
    est = Estimate((lo + hi) / 2 if math.isfinite(lo) else 0.3, lo, hi)
    assert judge(est, sign, magnitude=magnitude) == want


def test_judge_refuses_a_bad_sign():
    with pytest.raises(ValueError, match=r"sign must be \+1 or -1"):
        judge(Estimate(1, 0, 2), 0)


def test_t_interval_is_students():
    est = t_interval(-0.29, 0.04, dof=4)
    q = stats.t.ppf(0.975, 4)
    assert (est.lo, est.hi) == pytest.approx((-0.29 - q * 0.04, -0.29 + q * 0.04))
    assert not t_interval(1.0, 0.1, dof=0).finite


def test_bootstrap_interval_of_a_mean_matches_the_normal_one():
    # Percentile bootstrap of the mean of n normal values ~ mean +- 1.96 sd / sqrt(n).
    x = np.random.default_rng(3).normal(2.0, 1.0, 400)
    est = mean_over(x.tolist(), what="draws")
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert est.value == pytest.approx(x.mean())
    assert (est.hi - est.lo) / 2 == pytest.approx(half, rel=0.15)
    assert est.lo < x.mean() < est.hi
    assert est == mean_over(x.tolist(), what="draws")  # seeded: the same interval every time


def test_bootstrap_leaves_out_undefined_resamples_and_needs_two_units():
    v = np.array([1.0, 2.0, 3.0])

    def corr_like(idx):  # undefined on a resample of one distinct unit
        return math.nan if len(set(idx.tolist())) < 2 else float(v[idx].std())

    est = bootstrap(3, corr_like)
    assert est.finite and est.lo >= 0
    assert not bootstrap(1, lambda i: 1.0).finite
    assert not bootstrap(3, lambda i: math.nan if len(i) else 0.0).finite


def test_all_of():
    assert all_of(["shown", "contradicted"]) == "contradicted"
    assert all_of([None, None]) is None
    assert all_of(["shown", "shown"]) == "shown"
