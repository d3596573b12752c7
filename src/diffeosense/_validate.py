"""Checks of config values, shared by every config dataclass so that the library and the
CLI refuse the same things with the same words.

A float option must be a real number (not a string, not a bool), finite (``nan`` and
``inf`` slip through ``x < 0`` tests: every comparison with NaN is False) and in range.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_float", "check_device", "check_types", "type_error"]


def check_float(
    owner: str,
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``float(value)`` if it is a finite real number in the range, else a ValueError
    naming ``owner.name``, the range and the value. ``optional``: None passes through.

    >>> check_float("DataConfig", "noise", 0.5, lo=0)
    0.5
    >>> check_float("DataConfig", "noise", float("nan"), lo=0)
    Traceback (most recent call last):
    ...
    ValueError: DataConfig.noise must be a finite number >= 0, got nan
    """
    if value is None and optional:
        return None
    rng = []
    if lo is not None:
        rng.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        rng.append(f"{'<' if hi_open else '<='} {hi:g}")
    want = "a finite number" + (" " + " and ".join(rng) if rng else "")
    if optional:
        want += " (or None)"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
    if not ok:
        raise ValueError(f"{owner}.{name} must be {want}, got {value!r}")
    return v


def check_device(name: str, value: Any) -> Any:
    """``torch.device(value)``, or a ValueError naming ``name`` and the devices allowed
    (``"auto"`` passes through for the caller to resolve).

    >>> check_device("device", "cuda:1")
    device(type='cuda', index=1)
    """
    import torch

    if isinstance(value, torch.device) or value == "auto":
        return value
    try:
        return torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name} must be cpu, cuda, cuda:N, mps or auto, got {value!r}"
        ) from None


def available_device(value: Any, flag: str = "--device") -> Any:
    """``torch.device(value)`` of a device this machine has (``"auto"``/None: cuda when
    available, else cpu); else one ValueError naming ``flag``, what is missing and what to
    use instead. Every command calls it before it makes any folder.

    >>> available_device("cpu")
    device(type='cpu')
    """
    import torch

    if value is None or value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = check_device(flag.lstrip("-"), value)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {value}: CUDA is not available on this machine (no GPU, "
                             f"or a CPU-only torch); use {flag} cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{flag} {value}: this machine has {n} CUDA device(s), "
                             f"cuda:0 to cuda:{n - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{flag} {value}: MPS is not available on this machine; use "
                             f"{flag} cpu")
    return dev


_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}


def _accepts(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # True is an int to Python, never a number to a config
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind)


def type_error(annotation: Any, value: Any) -> str | None:
    """What is wrong with ``value`` for a parameter annotated ``annotation`` (a string under
    ``from __future__ import annotations``, or a type): None when it fits, or when the
    annotation is not made of int, float, bool, str and None only (then it is not checked).

    >>> type_error("int | None", "abc")
    'must be int or None'
    >>> type_error("float", 2) is None
    True
    """
    ann = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kinds = [_SIMPLE.get(a.strip()) for a in str(ann).split("|")]
    if not kinds or None in kinds or any(_accepts(value, t) for t in kinds):
        return None
    return "must be " + " or ".join(a.strip() for a in str(ann).split("|"))


def check_types(obj: Any, **ranges: dict[str, Any]) -> None:
    """Check every field of the dataclass ``obj``: a field named in ``ranges`` with
    :func:`check_float` and that range (``noise={"lo": 0}``); any other field whose annotation
    is made of int, float, bool, str and None by type (:func:`type_error`), a float also
    finite. A ValueError names the first bad field.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     width: int = 4
    ...     lr: float = 0.1
    >>> check_types(C(width="abc"))
    Traceback (most recent call last):
    ...
    ValueError: C.width must be int, got 'abc'
    >>> check_types(C(lr=float("nan")), lr={"lo": 0, "lo_open": True})
    Traceback (most recent call last):
    ...
    ValueError: C.lr must be a finite number > 0, got nan
    """
    import dataclasses

    owner = type(obj).__name__
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in ranges:
            check_float(owner, f.name, value, **ranges[f.name])
            continue
        err = type_error(f.type, value)
        if err is None and isinstance(value, float) and not math.isfinite(value):
            err = "must be a finite number"
        if err:
            raise ValueError(f"{owner}.{f.name} {err}, got {value!r}")
