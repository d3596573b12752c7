"""Pluggable perturbations for the sensitivity engine: sample parameters, then apply them.

A perturbation is anything with ``sample(x, generator) -> params`` and ``apply(x, params) -> x'``
(the :class:`Perturbation` protocol). Sampling once and applying the same params again replays
the perturbation exactly: the noise matched to *that* diffeo, the same diffeo at another layer.

Built in: ``"diffeo"`` (:class:`MaxEntDiffeo`, the paper's max-entropy diffeomorphism; default
1 px typical displacement, cut 3). Other modules register more (the scale-detection task adds its
one-step moves of the active pixels). Users may pass any object following the protocol, or a
plain callable ``fn(x, generator) -> x'`` (then replay means calling it with the same generator
state).

>>> import torch
>>> p = as_perturbation("diffeo:cut=3,displacement=1.0")
>>> x = torch.rand(2, 3, 32, 32)
>>> params = p.sample(x, torch.Generator().manual_seed(0))
>>> torch.equal(p.apply(x, params), p.apply(x, params))
True
>>> sorted(list_perturbations())[:1]
['diffeo']
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from . import diffeo as _diffeo
from ._validate import check_types

__all__ = [
    "Perturbation",
    "MaxEntDiffeo",
    "CallablePerturbation",
    "as_perturbation",
    "register_perturbation",
    "list_perturbations",
]


@runtime_checkable
class Perturbation(Protocol):
    """``sample(x [B, ...], generator) -> params``; ``apply(x, params) -> x'`` (same shape)."""

    name: str

    def sample(self, x: Tensor, generator: torch.Generator | None) -> Any: ...

    def apply(self, x: Tensor, params: Any) -> Tensor: ...


_REGISTRY: dict[str, Callable[..., Perturbation]] = {}


def register_perturbation(name: str):
    """Decorator registering a perturbation factory under ``name`` for :func:`as_perturbation`."""

    def deco(factory):
        _REGISTRY[name] = factory
        return factory

    return deco


def list_perturbations() -> list[str]:
    return sorted(_REGISTRY)


@register_perturbation("diffeo")
@dataclass(frozen=True)
class MaxEntDiffeo:
    """The max-entropy random diffeomorphism, one independent field per sample.

    Args:
        cut: high-frequency cutoff c (the paper: 3).
        displacement: typical displacement in pixels setting ``T = 4 delta^2 / (pi n^2 ln c)``
            (the paper: 1 px); ignored when ``T`` is given.
        T: explicit temperature.
        interp: ``"bilinear"``, ``"nearest"`` or ``"gaussian"``.

    Inputs ``[B, C, H, W]`` get 2D fields, ``[B, C, L]`` 1D fields.
    """

    cut: int = 3
    displacement: float = 1.0
    T: float | None = None
    interp: str = "bilinear"
    name: str = "diffeo"

    def __post_init__(self) -> None:
        check_types(self, displacement={"lo": 0}, T={"lo": 0, "optional": True})
        if self.cut < 1:
            raise ValueError(f"MaxEntDiffeo.cut must be an integer >= 1, got {self.cut!r}")
        _diffeo._check_interp(self.interp)

    def temperature(self, size: tuple[int, ...]) -> float:
        if self.T is not None:
            return self.T
        return _diffeo.temperature_for_displacement(self.displacement, self.cut, size)

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> _diffeo.DiffeoFields:
        if x.ndim not in (3, 4):
            raise ValueError(
                f"the diffeo perturbation takes [B, C, H, W] images or [B, C, L] signals, "
                f"got shape {tuple(x.shape)}."
            )
        size = tuple(x.shape[2:])
        # The coefficients stay on the generator's device (the host for a CPU generator):
        # apply moves them with the batch, in one copy, and checks them without waiting
        # for the accelerator.
        return _diffeo.sample_fields(
            x.shape[0], size, self.temperature(size), self.cut,
            generator=generator, dtype=x.dtype,
        )

    def apply(self, x: Tensor, params: _diffeo.DiffeoFields) -> Tensor:
        return _diffeo.apply(x, params, self.interp)

    def config(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CallablePerturbation:
    """Wrap ``fn(x, generator) -> x'``; params are the generator state, so apply replays."""

    fn: Callable[[Tensor, torch.Generator | None], Tensor]
    name: str = "callable"

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Any:
        if generator is None:
            return None
        params = (generator.device, generator.get_state())
        # Advance the caller's generator exactly as applying would, so later draws stay fresh.
        self.fn(x, generator)
        return params

    def apply(self, x: Tensor, params: Any) -> Tensor:
        if params is None:
            return self.fn(x, None)
        device, state = params
        g = torch.Generator(device=device)
        g.set_state(state)
        return self.fn(x, g)

    def config(self) -> dict:
        return {"name": self.name, "fn": getattr(self.fn, "__qualname__", repr(self.fn))}


def as_perturbation(obj: Any) -> Perturbation:
    """A :class:`Perturbation` from an instance, a callable, or a spec string.

    Spec strings: ``"name"`` or ``"name:key=value,key=value"``, e.g.
    ``"diffeo:cut=5,displacement=0.5"``; ``list_perturbations()`` gives the names.
    """
    if isinstance(obj, str):
        name, _, args = obj.partition(":")
        if name not in _REGISTRY:
            raise ValueError(
                f"unknown perturbation {name!r}; available: {', '.join(list_perturbations())}."
            )
        kwargs = {}
        for item in filter(None, (a.strip() for a in args.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"perturbation option {item!r} must read key=value (in {obj!r}).")
            try:
                kwargs[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                kwargs[key.strip()] = value.strip()
        try:
            return _REGISTRY[name](**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad options for perturbation {name!r} (in {obj!r}): {e}") from None
    if hasattr(obj, "sample") and hasattr(obj, "apply"):
        return obj
    if callable(obj):
        return CallablePerturbation(obj, name=getattr(obj, "__name__", "callable"))
    raise ValueError(
        f"cannot use {obj!r} as a perturbation: give a name ({', '.join(list_perturbations())}), "
        "an object with sample(x, generator) and apply(x, params), or fn(x, generator) -> x'."
    )
