"""Model registry: families register once, users create them by name (as timm does).

>>> import torch.nn as nn
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
from collections.abc import Callable

import torch.nn as nn

__all__ = ["register_model", "create_model", "list_models"]

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
    """Build a registered model by name: ``create_model("vgg11", in_channels=3, num_classes=10)``."""
    key = name.lower()
    if key not in _MODELS:
        close = difflib.get_close_matches(key, _MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}."
        )
    return _MODELS[key](in_channels=in_channels, num_classes=num_classes, **kwargs)
