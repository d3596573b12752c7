"""Writing figures: one atomic save for every figure of the library.

A PNG is written with its vector twins beside it (``.svg``: text kept as text; ``.pdf``:
TrueType fonts, editable), so every figure the library saves can go into a paper as is.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from .. import _io

#: The vector formats written beside every PNG.
VECTOR_SUFFIXES = (".svg", ".pdf")


def _write(fig, path: Path, dpi: int) -> Path:
    import matplotlib as mpl

    from .style import SAVE_RC

    buf = io.BytesIO()
    with mpl.rc_context(SAVE_RC):
        fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi,
                    bbox_inches="tight", metadata=_metadata(path))
    return _io.write_bytes(path, buf.getvalue())


def _metadata(path: Path) -> dict | None:
    # No creation date in SVG/PDF: the same figure gives the same bytes (diffs stay quiet).
    fmt = path.suffix.lower()
    return {".svg": {"Date": None}, ".pdf": {"CreationDate": None}}.get(fmt)


def save_figure(fig, path: str | os.PathLike, dpi: int = 200, vector: bool = True) -> Path:
    """Write ``fig`` atomically, in the format of the suffix (PNG when there is none); a PNG
    also gets ``.svg`` and ``.pdf`` siblings unless ``vector`` is False. Returns ``path``.

    >>> import tempfile, pathlib
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(2, 2)); _ = fig.subplots().plot([0, 1])
    >>> p = save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "f.png")
    >>> sorted(q.name for q in p.parent.iterdir())
    ['f.pdf', 'f.png', 'f.svg']
    """
    path = Path(path)
    out = _write(fig, path, dpi)
    if vector and path.suffix.lower() == ".png":
        for suffix in VECTOR_SUFFIXES:
            _write(fig, path.with_suffix(suffix), dpi)
    return out
