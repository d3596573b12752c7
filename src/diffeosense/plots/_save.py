"""Writing figures: one atomic save for every figure of the library."""

from __future__ import annotations

import io
import os
from pathlib import Path

from .. import _io


def save_figure(fig, path: str | os.PathLike, dpi: int = 130) -> Path:
    """Write ``fig`` atomically, in the format of the suffix (PNG when there is none)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi, bbox_inches="tight")
    return _io.write_bytes(path, buf.getvalue())
