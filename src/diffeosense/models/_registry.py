"""Model registry: families register once, users create them by name (as timm does).

>>> import torch.nn as nn

from .._validate import type_error
>>> @register_model("tiny-doc-example")
... def tiny(in_channels: int = 1, num_classes: int = 10, **kw) -> nn.Module:
...     return nn.Linear(in_channels, num_classes)
>>> "tiny-doc-example" in list_models()
True
>>> create_model("tiny-doc-example", in_channels=3, num_classes=2)
Linear(in_features=3, out_features=2, bias=True)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from .._validate import type_error

__all__ = ["register_model", "create_model", "list_models", "model_options"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a factory ``fn(in_channels, num_classes, **kw) -> nn.Module``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name.lower()
        if key in _MODELS and _MODELS[key] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[key] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, in_channels: int = 3, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered model by name: ``create_model("vgg11", in_channels=3, num_classes=10)``.

    Options are checked against the model's signature first: an unknown option, or a value
    of the wrong type (``depth="abc"``), is a ValueError naming the option and what it takes.
    """
    key = name.lower()
    if key not in _MODELS:
        close = difflib.get_close_matches(key, _MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}."
        )
    _check_options(key, {"in_channels": in_channels, "num_classes": num_classes, **kwargs})
    try:
        return _MODELS[key](in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as e:  # e.g. an option that the factory sets itself
        raise ValueError(f"bad options {kwargs} for model {name!r}: {e}") from None


def model_options(name: str) -> dict[str, inspect.Parameter] | None:
    """The keyword options of model ``name``: its factory's named parameters and, when the
    factory forwards ``**kw``, those of the model class it builds (a module class it names
    whose constructor takes ``num_classes``). None when they cannot be known.

    >>> sorted(model_options("lenet"))
    ['image_size', 'in_channels', 'num_classes']
    """
    fn = _MODELS[name.lower()]
    params = dict(inspect.signature(fn).parameters)
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return params
    targets = [
        obj for n in fn.__code__.co_names
        if isinstance(obj := fn.__globals__.get(n), type) and issubclass(obj, nn.Module)
        and "num_classes" in inspect.signature(obj).parameters
    ]  # fmt: skip
    if len(targets) != 1:
        return None
    inner = dict(inspect.signature(targets[0]).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in inner.values()):
        return None
    return {**inner, **{k: p for k, p in params.items() if p.kind is not p.VAR_KEYWORD}}


def _check_options(name: str, kwargs: dict[str, Any]) -> None:
    options = model_options(name)
    if options is None:
        return
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        valid = sorted(o for o, q in options.items() if q.kind in (q.POSITIONAL_OR_KEYWORD,
                                                                   q.KEYWORD_ONLY))  # fmt: skip
        raise ValueError(f"unknown options for model {name!r}: {unknown}; its options: {valid}")
    for k, v in kwargs.items():
        p = options[k]
        err = type_error(p.annotation, v)  # None: fits, or a type we do not check
        if err:
            default = "" if p.default is p.empty else f" (default {p.default!r})"
            raise ValueError(f"model {name!r}: option {k}={v!r} {err}{default}")
