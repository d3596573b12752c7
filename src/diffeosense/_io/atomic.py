"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every writer here writes to a temporary file in the destination folder, flushes it
to disk, then ``os.replace`` s it over the target (atomic on POSIX and Windows). A crash
(SIGKILL) between the two leaves a ``.NAME.*.tmp`` behind, never a half file:
:func:`diffeosense._io.locks.clean_stale_temporaries` removes them once the folder's owner
knows nobody writes. Also the JSON conversion every result and config goes through.

>>> import tempfile
>>> p = write_json(Path(tempfile.mkdtemp()) / "a.json", {"x": (1, 2)})
>>> json.loads(p.read_text())
{'x': [1, 2]}
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write", "write_bytes", "write_text", "write_json", "torch_save",
           "to_jsonable", "dataclass_from_dict"]


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Never leave the temporary behind, and never touch the previous good file.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Turn tensors, numpy values, paths, tuples and dataclasses into plain JSON values."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    return obj


def dataclass_from_dict(cls: type, d: dict[str, Any]):
    """``cls(**d)`` for a config dataclass, refusing unknown keys (a typo is never dropped)."""
    import dataclasses

    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} keys: {sorted(unknown)}; valid keys: "
            f"{[f.name for f in dataclasses.fields(cls)]}"
        )
    return cls(**d)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically: the previous file stays intact if saving fails."""
    return atomic_write(path, lambda f: torch.save(obj, f))
