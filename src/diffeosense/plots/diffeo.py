"""Figures of the diffeomorphism engine (edge module: matplotlib is imported here, never in the core).

:func:`plot_diffeo_grid` shows one image deformed over a grid of (cut, T): rows are cutoffs,
columns temperatures, each panel framed by where its T sits relative to the natural range
``[T_min, T_max]`` of its cut (:func:`diffeosense.diffeo.temperature_range`): below (typical
displacement under half a pixel), inside, above (overhangs: the map may fold).
:func:`temperature_ladder` gives log-spaced temperatures over and a bit beyond that range and
:func:`load_image` reads a file or one of scikit-image's shipped photographs.

>>> import torch
>>> temps = temperature_ladder(32, 3, inside=3, below=1, above=1)
>>> [f"{t:.2e}" for t in temps]
['4.17e-05', '2.83e-04', '1.92e-03', '1.30e-02', '8.86e-02']
>>> img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
>>> fig = plot_diffeo_grid(img, [2, 3], [temps[:3], temps[1:4]])
>>> len(fig.axes)
8
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..diffeo import apply, sample_fields, temperature_range, typical_displacement
from . import style
from ._save import save_figure

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not when the CLI starts
    from matplotlib.figure import Figure

__all__ = ["PHOTOS", "load_image", "temperature_ladder", "plot_diffeo_grid", "save_figure"]

# scikit-image photographs that ship with the package (no download needed).
PHOTOS = (
    "astronaut", "brick", "camera", "cat", "checkerboard", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "moon", "page", "retina", "rocket", "text",
)

# Frame colours of the panels: where T sits relative to [T_min, T_max] of the row's cut.
COLOURS = {"below": "#9a9a9a", "inside": "#1b9e3e", "above": "#d1495b", "original": "#222222"}
LABELS = {
    "below": "T < T_min: typical displacement under half a pixel",
    "inside": "natural range T_min ≤ T ≤ T_max",
    "above": "T > T_max: overhangs (the map may fold)",
}


# ------------------------------------------------------------------ input
def _to_chw_float(a) -> torch.Tensor:
    """numpy/PIL array ``[H, W]``, ``[H, W, C]`` (uint8, bool, int or float) -> float ``[C, H, W]``
    in [0, 1]; an alpha channel is dropped."""
    import numpy as np

    a = np.asarray(a)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected a grey or colour image [H, W] or [H, W, C], got shape {a.shape}.")
    a = a[:, :, :3] if a.shape[2] in (3, 4) else a[:, :, :1]  # drop alpha (grey+alpha too)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype in (np.uint8, np.uint16):
        a = a.astype(np.float32) / (np.iinfo(a.dtype).max if a.max() > 1 else 1)
    else:  # float, or wider integers (Pillow's 32-bit "I" mode): rescaled below if needed
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:  # e.g. 16-bit TIFF read as float: rescale to [0, 1]
            a = (a - lo) / max(hi - lo, 1e-12)
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike | None = None, photo: str | None = None,
               size: int = 32) -> torch.Tensor:
    """An image file or a shipped photograph, centre-cropped to a square, resized: ``[C, n, n]``.

    Args:
        path: any file Pillow reads (PNG, JPEG, TIFF, BMP, ...). Grey images give ``C = 1``.
        photo: else the name of a scikit-image photograph (:data:`PHOTOS`), e.g. ``"chelsea"``.
        size: output side ``n`` in pixels (>= 4); antialiased bilinear resize.

    Returns:
        float32 ``[C, n, n]`` in [0, 1].

    >>> load_image(photo="chelsea", size=32).shape
    torch.Size([3, 32, 32])
    """
    if (path is None) == (photo is None):
        raise ValueError("give exactly one of an image path or a photo name.")
    if int(size) != size or size < 4:
        raise ValueError(f"size must be an integer >= 4 pixels, got {size}.")
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path}")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                if im.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "I;16", "F"):
                    im = im.convert("RGBA" if "A" in im.getbands() else "RGB")  # palette, CMYK..
                img = _to_chw_float(im)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"could not read {path} as an image ({e}).") from e
    else:
        if photo not in PHOTOS:
            raise ValueError(f"unknown photo {photo!r}; choose one of {', '.join(PHOTOS)}.")
        import skimage.data

        img = _to_chw_float(getattr(skimage.data, photo)())
    _, H, W = img.shape
    s = min(H, W)
    top, left = (H - s) // 2, (W - s) // 2
    img = img[:, top : top + s, left : left + s]
    out = torch.nn.functional.interpolate(
        img[None], size=(size, size), mode="bilinear", antialias=s > size, align_corners=False
    )[0]
    return out.clamp(0, 1)


# ------------------------------------------------------------------ temperatures
def temperature_ladder(size: int | Sequence[int], cut: int, inside: int = 4, below: int = 1,
                       above: int = 1) -> list[float]:
    """Log-spaced temperatures: ``inside`` from ``T_min`` to ``T_max`` (both included), then
    ``below`` / ``above`` more steps of the same ratio beyond each end.

    ``T_k = T_min r^k``, ``r = (T_max / T_min)^(1 / (inside - 1))``, ``k = -below .. inside - 1 + above``.
    """
    if inside < 2 or below < 0 or above < 0:
        raise ValueError(f"need inside >= 2 and below, above >= 0; got {inside}, {below}, {above}.")
    tmin, tmax = temperature_range(size, cut)
    if tmax <= tmin:
        raise ValueError(
            f"cut {cut} at size {size}: the natural range is empty (T_max {tmax:.2e} <= T_min "
            f"{tmin:.2e}); use a smaller cut or a larger image."
        )
    r = (tmax / tmin) ** (1 / (inside - 1))
    return [tmin * r**k for k in range(-below, inside + above)]


def _where(T: float, tmin: float, tmax: float) -> str:
    eps = 1e-9  # the ladder's end points are T_min and T_max up to rounding
    return "below" if T < tmin * (1 - eps) else "above" if T > tmax * (1 + eps) else "inside"


def _fmt_T(T: float) -> str:
    if T == 0:
        return "0"
    m, e = f"{T:.1e}".split("e")
    return f"{m}e{int(e)}"


# ------------------------------------------------------------------ the figure
@style.styled()
def plot_diffeo_grid(
    image: torch.Tensor,
    cuts: Sequence[int],
    temps: Sequence[float] | Sequence[Sequence[float]],
    *,
    seed: int = 0,
    interp: str = "bilinear",
    title: str | None = None,
    panel_inches: float = 1.25,
) -> Figure:
    """Grid of deformed copies of ``image``: one row per cut, one column per temperature.

    Args:
        image: ``[C, H, W]`` (C = 1 or 3) or ``[H, W]``, float in [0, 1].
        cuts: the cutoffs ``c`` of the rows (``c >= 2``: the natural range needs ``ln c > 0``).
        temps: one list of temperatures shared by all rows, or one list per row (same length),
            e.g. ``[temperature_ladder(n, c) for c in cuts]``.
        seed: each row draws its Gaussian coefficients ``z`` once (generator seeded with
            ``seed``); the columns scale the same field by ``sqrt(T)``, so a row shows one
            deformation growing with T.
        interp: ``"bilinear"``, ``"nearest"`` or ``"gaussian"``.

    The first column is the original. Each panel is titled with T and the typical displacement
    ``delta = (n / 2) sqrt(pi T ln c)`` px, framed grey / green / red when T is below / inside /
    above the natural range ``[T_min, T_max]`` of its cut (written under the row label).

    Returns:
        a ``matplotlib.figure.Figure`` (not attached to pyplot; save it with :func:`save_figure`).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    img = torch.as_tensor(image)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or img.shape[0] not in (1, 3) or not img.is_floating_point():
        raise ValueError(f"image must be float [C, H, W] with C = 1 or 3, got {tuple(img.shape)} "
                         f"{img.dtype}.")
    cuts = [int(c) for c in cuts]
    if not cuts or min(cuts) < 2:
        raise ValueError(f"cuts must be integers >= 2 (the natural range needs ln c > 0), got {cuts}.")
    rows_T = [list(map(float, temps))] * len(cuts) if not isinstance(temps[0], Sequence) else [
        list(map(float, t)) for t in temps
    ]
    if len(rows_T) != len(cuts) or len({len(t) for t in rows_T}) != 1 or not rows_T[0]:
        raise ValueError("temps must be one list of temperatures, or one list per cut, all the same length.")
    if not all(math.isfinite(T) and T >= 0 for t in rows_T for T in t):
        raise ValueError(f"temperatures must be finite and >= 0, got {rows_T}.")
    C, H, W = img.shape
    size = (H, W)
    x = img.double()[None]
    n_cols = 1 + len(rows_T[0])

    # At least ~6.5 in wide so the title fits; the legend stacks when the grid is narrow.
    width = max(panel_inches * n_cols + 0.9, 6.5)
    legend_rows = 1 if width >= 9 else 3
    fig = Figure(figsize=(width, panel_inches * 1.32 * len(cuts) + 1.1 + 0.17 * legend_rows),
                 layout="constrained")
    axes = fig.subplots(len(cuts), n_cols, squeeze=False)
    show = {"cmap": "gray", "vmin": 0, "vmax": 1} if C == 1 else {}

    def draw(ax, pic: torch.Tensor, frame: str, label: str) -> None:
        ax.imshow(pic.clamp(0, 1).permute(1, 2, 0).squeeze(-1).float().numpy(),
                  interpolation="nearest", **show)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(COLOURS[frame])
            spine.set_linewidth(1.0 if frame == "original" else 3.0)
        ax.set_title(label, fontsize=8, color=COLOURS[frame] if frame != "inside" else "#146c2e",
                     pad=3)

    for r, (cut, Ts) in enumerate(zip(cuts, rows_T, strict=True)):
        tmin, tmax = temperature_range(size, cut)
        draw(axes[r, 0], img, "original", "original")
        axes[r, 0].set_ylabel(f"cut c = {cut}\nT ∈ [{_fmt_T(tmin)}, {_fmt_T(tmax)}]", fontsize=9)
        for k, T in enumerate(Ts):
            with warnings.catch_warnings():
                # Temperatures outside the natural range are the point of this figure.
                warnings.filterwarnings("ignore", message="T outside the natural range")
                f = sample_fields(1, size, T, cut, generator=torch.Generator().manual_seed(seed),
                                  dtype=torch.float64)
            y = apply(x, f, interp)[0]
            delta = float(typical_displacement(T, cut, size))
            draw(axes[r, k + 1], y, _where(T, tmin, tmax), f"T={_fmt_T(T)}\nδ={delta:.2g} px")

    handles = [Line2D([], [], color=COLOURS[k], lw=4, label=v) for k, v in LABELS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=4 - legend_rows, fontsize=8,
               frameon=False)
    fig.suptitle(
        title or f"Random max-entropy diffeomorphisms ({H}x{W} px)\n"
        "rows: cut c, natural range [T_min, T_max]; columns: temperature T\n"
        f"δ = typical displacement; one field per row scaled by sqrt(T) (seed {seed}, {interp})",
        fontsize=9,
    )
    return style.finalize(fig)
