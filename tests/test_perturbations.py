"""The perturbation protocol: names, options, replay, callables."""

from __future__ import annotations

import pytest
import torch

from diffeosense.diffeo import DiffeoFields, temperature_for_displacement
from diffeosense.perturbations import (
    CallablePerturbation,
    MaxEntDiffeo,
    Perturbation,
    as_perturbation,
)


def test_spec_strings_build_configured_diffeos():
    p = as_perturbation("diffeo:cut=5,displacement=0.5,interp='nearest'")
    assert p == MaxEntDiffeo(cut=5, displacement=0.5, interp="nearest")
    assert p.temperature((32, 32)) == pytest.approx(temperature_for_displacement(0.5, 5, 32))
    assert as_perturbation("diffeo:T=1e-3").temperature((8, 8)) == 1e-3
    assert isinstance(as_perturbation("diffeo"), Perturbation)


def test_diffeo_perturbation_on_images_and_signals(gen):
    p = MaxEntDiffeo()
    for x in (torch.rand(3, 2, 16, 16), torch.rand(3, 2, 40)):
        params = p.sample(x, gen)
        assert isinstance(params, DiffeoFields) and params.batch_size == 3
        y = p.apply(x, params)
        assert y.shape == x.shape and torch.equal(p.apply(x, params), y)
        assert not torch.equal(y, x)


def test_callable_perturbation_replays_and_advances_the_generator():
    def jitter(x, g):
        return x + torch.randn(x.shape, generator=g)

    p = as_perturbation(jitter)
    assert isinstance(p, CallablePerturbation) and p.name == "jitter"
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 5)
    params = p.sample(x, g)
    a, b = p.apply(x, params), p.apply(x, params)
    assert torch.equal(a, b)
    params2 = p.sample(x, g)
    assert not torch.equal(p.apply(x, params2), a)  # the generator moved on


def test_bad_specs():
    with pytest.raises(ValueError, match="unknown perturbation 'warp'"):
        as_perturbation("warp")
    with pytest.raises(ValueError, match="key=value"):
        as_perturbation("diffeo:cut")
    with pytest.raises(ValueError, match="bad options"):
        as_perturbation("diffeo:temperature=3")
    with pytest.raises(ValueError, match="cannot use"):
        as_perturbation(42)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        MaxEntDiffeo().sample(torch.zeros(4, 4), None)
