"""Short display names of networks, set from the model spec: the same in every figure and table.

``display_name(spec, kwargs)`` joins the spec's short form and its options with ``-``:
``depth`` and ``width`` as ``3x32`` (or ``d3`` / ``w32`` alone), a width multiplier
``width_mult`` as ``w0.25x``, a True flag as its short
name (``batch_norm=True`` -> ``bn``), a False one as ``no`` + it, any other option as
``key=value``, in sorted order. A spec of another source keeps its kind (``tv:resnet18``,
``timm:...``, a factory file as ``file:FACTORY`` without its folder). The former long form of
the tables (``simplecnn(batch_norm=True,depth=3,width=32)``) is read too, so old tables are
named as new ones.

>>> display_name("simplecnn", {"depth": 3, "width": 32, "batch_norm": True})
'simplecnn-3x32-bn'
>>> display_name("simplecnn(batch_norm=True,depth=3,width=32)")
'simplecnn-3x32-bn'
>>> display_name("lenet"), display_name("fc4", {"width": 256, "bias": False})
('lenet', 'fc4-w256-nobias')
>>> display_name("vgg11bn", {"width_mult": 0.25})
'vgg11bn-w0.25x'
>>> display_name("torchvision:resnet18", {"weights": "DEFAULT"})
'tv:resnet18-weights=DEFAULT'
>>> display_name("/home/me/nets.py:make_net")
'nets.py:make_net'
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["display_name", "long_name"]

# Short names of boolean options.
_FLAGS = {"batch_norm": "bn", "batchnorm": "bn", "pretrained": "pt", "dropout": "drop"}
_KINDS = {"torchvision": "tv"}
_LONG = re.compile(r"^(?P<spec>[^()]+)\((?P<kw>.*)\)$")


def long_name(model: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The former display name, ``model(k=v,...)`` in sorted order (still the key of cached
    folders named after it).

    >>> long_name("simplecnn", {"width": 32, "depth": 3})
    'simplecnn(depth=3,width=32)'
    """
    if not kwargs:
        return model
    return model + "(" + ",".join(f"{k}={v}" for k, v in sorted(kwargs.items())) + ")"


def _parse_long(name: str) -> tuple[str, dict[str, Any]]:
    m = _LONG.match(name.strip())
    if not m:
        return name, {}
    kw: dict[str, Any] = {}
    for part in re.split(r",(?=\s*\w+=)", m["kw"]):
        if "=" not in part:
            return name, {}
        k, v = part.split("=", 1)
        try:
            kw[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            kw[k.strip()] = v.strip()
    return m["spec"], kw


def _short_spec(spec: str) -> str:
    kind, sep, rest = spec.partition(":")
    if not sep or kind.endswith(".py") or "/" in kind or "\\" in kind:
        if sep:  # FILE.py:FACTORY: the file without its folder
            return re.split(r"[\\/]", kind)[-1] + ":" + rest
        return spec
    return f"{_KINDS.get(kind, kind)}:{rest}"


def display_name(model: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The short name of ``model`` (a spec, or a former long display name) built with
    ``kwargs`` (see the module docstring)."""
    model = str(model)
    if not kwargs:
        model, kwargs = _parse_long(model)
    parts = [_short_spec(model)]
    kw = dict(kwargs or {})
    depth, width = kw.pop("depth", None), kw.pop("width", None)
    if depth is not None and width is not None:
        parts.append(f"{depth}x{width}")
    elif depth is not None:
        parts.append(f"d{depth}")
    elif width is not None:
        parts.append(f"w{width}")
    mult = kw.pop("width_mult", None)
    if mult is not None:
        parts.append(f"w{mult:g}x")
    for k in sorted(kw):
        v = kw[k]
        if isinstance(v, bool):
            short = _FLAGS.get(k, k)
            parts.append(short if v else f"no{short}")
        else:
            parts.append(f"{k}={v}")
    return "-".join(parts)
