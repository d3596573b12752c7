"""Datasets in one file of arrays or tensors: ``PATH.npz``, ``PATH.npy``, ``PATH.pt``.

What a file may hold:

* ``.npz`` (``np.savez``): arrays ``x`` (required), ``y``, ``x_test``, ``y_test``, and
  optionally ``layout`` (``"images"`` or ``"signals"``); read without pickle;
* ``.npy``: one array, ``x``;
* ``.pt`` / ``.pth`` (``torch.save``): a dict of tensors with the same keys, a tensor
  (``x``), or a tuple ``(x, y)`` / ``(x, y, x_test, y_test)``; read with
  ``weights_only=True`` (no code runs).

Samples ``x``: ``[N, C, H, W]`` images; ``[N, H, W]`` one-channel images; ``[N, C, L]``
signals. A 3D array is images unless its second dimension is at most 4 (``[N, 1, L]``: a
signal; no image is 4 pixels high) or ``layout`` says otherwise. uint8 values are divided by
255 (as the image datasets); floating values are kept (as float32); other integer types are
refused (say what they mean: scale them to float). Channels-last ``[N, H, W, C]`` is refused
with the transpose to apply.

Labels ``y``: ``[N]`` integer class indices (>= 0); integral floats are taken as such; floats
in {-1, +1} are a binary task's labels (train it with ``--loss hinge``). Without ``y`` the
dataset has no labels: ``measure`` and ``pooling`` work (D, G, R need none), ``train``
refuses it. Without ``x_test`` there is no test split (probes are then taken from ``x``).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "d.npz"
>>> np.savez(path, x=np.zeros((5, 28, 28), np.uint8), y=np.arange(5))
>>> a = read_array_file(path)
>>> tuple(a["x"].shape), a["x"].dtype, a["y"].tolist(), a["x_test"]
((5, 1, 28, 28), torch.uint8, [0, 1, 2, 3, 4], None)
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["read_array_file", "ARRAY_KEYS", "LAYOUTS"]

ARRAY_KEYS = ("x", "y", "x_test", "y_test", "layout")
LAYOUTS = ("images", "signals")


def _load(path: Path) -> dict[str, Any]:
    """The file's entries by key (``x``, ...), as numpy arrays or tensors."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except ValueError as e:  # numpy: object arrays need pickle
        raise ValueError(f"{path} holds pickled objects ({e}); save plain numeric arrays "
                         f"(np.savez(path, x=..., y=...))") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"cannot read {path} ({type(e).__name__}: {first}); save a dict of "
                         f"tensors with torch.save({{'x': x, 'y': y}}, path)") from None
    if isinstance(obj, torch.Tensor):
        return {"x": obj}
    if isinstance(obj, tuple | list) and len(obj) in (2, 4):
        return dict(zip(("x", "y", "x_test", "y_test"), obj, strict=False))
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return obj
    raise ValueError(f"{path} holds a {type(obj).__name__}; save a tensor, a tuple (x, y[, "
                     f"x_test, y_test]) or a dict with keys {', '.join(ARRAY_KEYS)}")


def _layout(value: Any, path: Path) -> str | None:
    if value is None:
        return None
    value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    if value not in LAYOUTS:
        raise ValueError(f"{path}: layout must be one of {LAYOUTS}, got {value!r}")
    return value


def _samples(a: Any, key: str, path: Path, layout: str | None) -> torch.Tensor:
    """``[N, C, H, W]`` or ``[N, C, L]``, uint8 or float32."""
    t = torch.as_tensor(a) if isinstance(a, np.ndarray | torch.Tensor) else None
    if t is None:
        raise ValueError(f"{path}: {key} is a {type(a).__name__}, not an array")
    shape = list(t.shape)
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise ValueError(f"{path}: {key} has dtype {t.dtype}; give uint8 (0..255, divided "
                         f"by 255) or floating values (kept as they are)")
    if t.dim() == 4:
        if layout == "signals":
            raise ValueError(f"{path}: {key} is 4D {shape} but layout says signals [N, C, L]")
        if shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            raise ValueError(f"{path}: {key} {shape} looks channels-last [N, H, W, C]; save it "
                             f"as [N, C, H, W] (np.transpose(x, (0, 3, 1, 2)))")
    elif t.dim() == 3:
        signals = layout == "signals" or (layout is None and shape[1] <= 4)
        if not signals:
            t = t.unsqueeze(1)  # [N, H, W] -> one channel
    else:
        raise ValueError(f"{path}: {key} has shape {shape}; give images [N, C, H, W] or "
                         f"[N, H, W], or signals [N, C, L]")
    if len(t) == 0:
        raise ValueError(f"{path}: {key} holds no samples")
    return t.contiguous() if t.dtype == torch.uint8 else t.to(torch.float32).contiguous()


def _labels(a: Any, key: str, path: Path, n: int) -> torch.Tensor:
    """int64 class indices, or float32 +-1 labels."""
    t = torch.as_tensor(a) if isinstance(a, np.ndarray | torch.Tensor) else None
    if t is None or t.dim() != 1:
        what = list(t.shape) if t is not None else type(a).__name__
        raise ValueError(f"{path}: {key} must be labels [N], got {what}")
    if len(t) != n:
        raise ValueError(f"{path}: {key} holds {len(t)} labels for {n} samples")
    if t.dtype == torch.bool:
        return t.long()
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: {key} holds NaN or infinite labels")
        values = set(torch.unique(t).tolist())
        if values <= {-1.0, 1.0}:
            return t.to(torch.float32)  # a binary task's labels (hinge loss)
        if not bool((t == t.round()).all()):
            raise ValueError(f"{path}: {key} holds non-integer values; labels are class "
                             f"indices 0..K-1 (or -1/+1 for a binary task)")
        t = t.long()
    t = t.long()
    if len(t) and int(t.min()) < 0:
        raise ValueError(f"{path}: {key} holds negative labels ({int(t.min())}); class "
                         f"indices are 0..K-1 (-1/+1 as floats for a binary task)")
    return t


def read_array_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.npz``/``.npy``/``.pt`` dataset (module docstring): ``{"x", "y", "x_test",
    "y_test"}`` with samples ``[N, C, H, W]`` or ``[N, C, L]`` (uint8 or float32) and labels
    ``[N]`` (int64, or float32 +-1), None where absent.

    Raises ``FileNotFoundError`` (no file) and ``ValueError`` (unknown keys, shapes, dtypes,
    lengths that disagree), each naming the file and the fix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file {path}")
    d = _load(path)
    unknown = sorted(set(d) - set(ARRAY_KEYS))
    if unknown or "x" not in d:
        raise ValueError(f"{path} holds {sorted(d)}; a dataset file holds x (required), y, "
                         f"x_test, y_test, layout"
                         + (f" (unknown: {unknown})" if unknown else " (x is missing)"))
    layout = _layout(d.get("layout"), path)
    x = _samples(d["x"], "x", path, layout)
    y = _labels(d["y"], "y", path, len(x)) if d.get("y") is not None else None
    x_test = y_test = None
    if d.get("x_test") is not None:
        x_test = _samples(d["x_test"], "x_test", path, layout)
        if x_test.shape[1:] != x.shape[1:] or x_test.dtype != x.dtype:
            raise ValueError(f"{path}: x_test is {x_test.dtype} {list(x_test.shape[1:])} per "
                             f"sample, x is {x.dtype} {list(x.shape[1:])}; they must agree")
        if d.get("y_test") is not None:
            y_test = _labels(d["y_test"], "y_test", path, len(x_test))
    elif d.get("y_test") is not None:
        raise ValueError(f"{path} holds y_test without x_test")
    if x_test is not None and (y is None) != (y_test is None):
        which = "y" if y is not None else "y_test"
        raise ValueError(f"{path}: labels for one split only ({which}); give y and y_test, "
                         f"or neither")
    if y is not None and y_test is not None and y.is_floating_point() != \
            y_test.is_floating_point():
        raise ValueError(f"{path}: y and y_test must both be class indices or both -1/+1")
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
