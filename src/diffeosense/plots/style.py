"""One style for every figure of the library: sizes, fonts, colours, markers, ticks, legends.

Every figure function draws inside :func:`styled` (the rcParams below, as a context: nothing
global changes) and ends with :func:`finalize`, which

* gives every log axis plain-number labels (0.1, 0.2, 0.5, ...; never ``2x10^-1``), at least
  three of them whatever the span (:class:`PlainLogLocator`, :class:`PlainFormatter`);
* lays the figure out (constrained layout) and moves every legend that covers a data point
  (a line's vertex or a point along it, a scatter point) to a free corner, else below its
  axes, outside the data.

Sizes are those of a journal page: :data:`ONE_COLUMN` (3.4 in) and :data:`TWO_COLUMNS`
(7.0 in) wide, fonts of 7-9 pt, readable at that size. Colours: the Okabe-Ito palette
(distinguishable with the common colour-vision deficiencies; Okabe & Ito 2008), as the
default colour cycle ``C0 .. C7``. Markers: one per architecture family (:func:`marker`),
the same in every figure.

>>> from matplotlib.figure import Figure
>>> with styled():
...     fig = Figure(figsize=figsize(1))
...     ax = fig.subplots()
...     _ = ax.plot([1, 2, 3], [0.09, 0.12, 0.16], "o-", label="D")
...     ax.set_yscale("log")
...     _ = ax.legend()
...     fig = finalize(fig)
>>> [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
['0.1', '0.12', '0.14', '0.16']
>>> legend_covers(ax.get_legend())
0
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator

import numpy as np
from matplotlib.ticker import (
    FixedLocator,
    Formatter,
    Locator,
    LogFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

__all__ = ["ONE_COLUMN", "TWO_COLUMNS", "PALETTE", "GREY", "RC", "figsize", "styled", "marker",
           "markers", "family", "colour", "stage_colour", "PlainLogLocator", "PlainFormatter", "plain_number",
           "log_axis", "integer_axis", "log_colorbar", "finalize", "data_points",
           "legend_covers"]

#: Width of one journal column and of a two-column figure, inches.
ONE_COLUMN = 3.4
TWO_COLUMNS = 7.0

#: Okabe-Ito, reordered so that the first colours stay apart on white (yellow last).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")
GREY = "#7f7f7f"

_STAGES = {"init": GREY, "initialization": GREY, "trained": PALETTE[0]}

#: The rcParams of every figure (fonts in points, for a figure printed at its own size).
RC = {
    "font.size": 8.0,
    "axes.titlesize": 8.0,
    "axes.labelsize": 8.0,
    "xtick.labelsize": 7.0,
    "ytick.labelsize": 7.0,
    "legend.fontsize": 7.0,
    "legend.title_fontsize": 7.0,
    "figure.titlesize": 9.0,
    "axes.prop_cycle": __import__("cycler").cycler(color=list(PALETTE)),
    "axes.linewidth": 0.7,
    "lines.linewidth": 1.3,
    "lines.markersize": 4.0,
    "grid.linewidth": 0.5,
    "grid.alpha": 0.35,
    "legend.framealpha": 0.85,
    "legend.borderaxespad": 0.4,
    "image.cmap": "viridis",
    "figure.dpi": 100.0,
}

#: rcParams at save time: text stays text in SVG, TrueType fonts in PDF (editable).
SAVE_RC = {"svg.fonttype": "none", "pdf.fonttype": 42}

# Architecture family -> markers: the first for its first member in a figure, the next ones
# for its other members (fc2, fc4 in one figure); the family of a model is its registered name
# without its size (vgg11bn -> vgg, resnet18 -> resnet, fc4 -> fc).
_MARKERS = {"fc": "ohp", "lenet": "s", "simplecnn": "Dd", "vgg": "^<>", "resnet": "vH",
            "alexnet": "P", "efficientnet": "X", "cnn1d": "*"}
_SPARE = "8H*d"


def figsize(columns: float = 2, height: float | None = None) -> tuple[float, float]:
    """``(width, height)`` in inches of a figure ``columns`` journal columns wide (1 or 2;
    wider figures: a larger number); height default: 0.75 x the width of one column.

    >>> figsize(1), figsize(2, 3.0)
    ((3.4, 2.55), (7.0, 3.0))
    """
    width = ONE_COLUMN if columns == 1 else TWO_COLUMNS * columns / 2
    return (width, 0.75 * ONE_COLUMN if height is None else float(height))


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """The library's rcParams (:data:`RC`) inside the block; nothing global is changed."""
    import matplotlib as mpl

    with mpl.rc_context(RC):
        yield


def family(model: str) -> str:
    """The architecture family of a model name: ``vgg11bn`` -> ``vgg``, ``fc4`` -> ``fc``,
    ``simplecnn-3x32-bn`` -> ``simplecnn``.

    >>> family("vgg11bn"), family("resnet18"), family("simplecnn-3x32-bn"), family("fc2")
    ('vgg', 'resnet', 'simplecnn', 'fc')
    """
    head = re.split(r"[-(:/ ]", str(model).lower())[-1 if ":" in str(model) else 0]
    for name in _MARKERS:
        if head.startswith(name):
            return name
    return re.sub(r"\d.*$", "", head) or head


def marker(model: str) -> str:
    """The marker of a model's architecture family (same in every figure)."""
    f = family(model)
    if f in _MARKERS:
        return _MARKERS[f][0]
    return _SPARE[sum(map(ord, f)) % len(_SPARE)]


def markers(models) -> dict[str, str]:
    """One marker per model, distinct within ``models``: each family's markers in turn, its
    members in natural order (``fc2`` before ``fc4``: o, h).

    >>> markers(["fc4", "lenet", "fc2", "vgg11bn"])
    {'fc4': 'h', 'lenet': 's', 'fc2': 'o', 'vgg11bn': '^'}
    """
    def natural(m):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(m))]

    out: dict[str, str] = {}
    used: set[str] = set()
    by_family: dict[str, list[str]] = {}
    for m in dict.fromkeys(models):
        by_family.setdefault(family(m), []).append(m)
    for f, members in by_family.items():
        options = list(_MARKERS.get(f, "")) + [marker(members[0])] + list(_SPARE) + list("<>p")
        for m in sorted(members, key=natural):
            out[m] = next((o for o in options if o not in used), "o")
            used.add(out[m])
    return {m: out[m] for m in dict.fromkeys(models)}


def colour(i: int) -> str:
    """The ``i``-th colour of the palette (cycling)."""
    return PALETTE[i % len(PALETTE)]


def stage_colour(stage: str) -> str:
    """Grey for a net at initialization, blue once trained."""
    return _STAGES.get(stage, PALETTE[1])


# ------------------------------------------------------------------------------------ ticks
def plain_number(x: float) -> str:
    """A tick label as a plain number, three significant digits at most: ``0.09``, ``0.2``,
    ``30``; scientific ``1e-05`` only beyond 1e-4 .. 1e5 (still no mathtext).

    >>> [plain_number(v) for v in (0.09000000000000001, 0.2, 3.0, 1500.0, 1e-6, 0.0)]
    ['0.09', '0.2', '3', '1500', '1e-06', '0']
    """
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    v = float(f"{x:.3g}")
    if 1e-4 <= abs(v) < 1e5:
        return np.format_float_positional(v, trim="-")
    return f"{v:.3g}"


class PlainFormatter(Formatter):
    """Labels every tick with :func:`plain_number`."""

    def __call__(self, x, pos=None):
        return plain_number(x)


class PlainLogLocator(Locator):
    """Major ticks of a log axis, at least ``min_ticks`` inside the view whatever its span:
    decades when they suffice (thinned beyond ``max_ticks``), else 1-2-5, else 1..9 per
    decade, else (a span under a factor ~2) linear steps.

    >>> loc = PlainLogLocator()
    >>> [plain_number(t) for t in loc.tick_values(0.09, 0.16)]
    ['0.1', '0.12', '0.14', '0.16']
    >>> [plain_number(t) for t in loc.tick_values(0.05, 2.0)]
    ['0.05', '0.1', '0.2', '0.5', '1', '2']
    >>> [plain_number(t) for t in loc.tick_values(1e-3, 1e3)]
    ['0.001', '0.01', '0.1', '1', '10', '100', '1000']
    """

    _SUBS = ((1.0,), (1.0, 2.0, 5.0), tuple(float(s) for s in range(1, 10)))

    def __init__(self, min_ticks: int = 3, max_ticks: int = 8):
        self.min_ticks, self.max_ticks = min_ticks, max_ticks

    def __call__(self):
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def _candidates(self, lo, hi):
        e0, e1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
        inside = lambda ts: [t for t in ts if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]  # noqa: E731
        for i, subs in enumerate(self._SUBS):
            ticks = inside([float(f"{s * 10.0**e:.12g}") for e in range(e0, e1 + 1) for s in subs])
            if i == 0 and len(ticks) > self.max_ticks:
                ticks = ticks[::math.ceil(len(ticks) / self.max_ticks)]
            yield ticks
            if i == 1:  # between 1-2-5 and 1..9 per decade: evenly spaced plain numbers
                for n in (4, 6):
                    lin = MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
                    yield inside([float(f"{t:.12g}") for t in lin if t > 0])

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((float(vmin), float(vmax)))
        if not (hi > 0 and math.isfinite(hi)):
            return np.array([1.0])
        if not (lo > 0 and math.isfinite(lo)):
            lo = hi / 1e3
        span = max(math.log10(hi / lo), 1e-12)
        best, best_gap = None, -1.0
        for ticks in self._candidates(lo, hi):
            if not self.min_ticks <= len(ticks) <= self.max_ticks + 2:
                continue
            # The closest two labels, as a share of the axis: labels must not crowd.
            gap = float(np.diff(np.log10(ticks)).min()) / span
            if gap >= 0.12:
                return np.array(ticks)
            if gap > best_gap:
                best, best_gap = ticks, gap
        if best is None:
            best = list(np.geomspace(lo, hi, self.min_ticks))
        return np.array(best)


def log_axis(axis) -> None:
    """Put ``axis`` (``ax.xaxis``, ``ax.yaxis``, a colour bar's long axis) on a log scale with
    :class:`PlainLogLocator` majors in plain numbers and unlabelled minor ticks."""
    if axis.get_scale() != "log":
        axis._set_axes_scale("log")
    axis.set_major_locator(PlainLogLocator())
    axis.set_major_formatter(PlainFormatter())
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_minor_formatter(NullFormatter())


def integer_axis(axis) -> None:
    """Integer ticks only on ``axis`` (depth, epoch, layer index)."""
    axis.set_major_locator(MaxNLocator(integer=True))


def log_colorbar(cb, label: str) -> None:
    """Label a colour bar of ``log10`` values with ticks in plain numbers of the values
    themselves (``0.1``, ``1``, ``10``), at least three, and ``label``."""
    lo, hi = cb.mappable.get_clim()
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        cb.set_label(label)
        return
    vals = PlainLogLocator().tick_values(10.0**lo, 10.0**hi)
    cb.set_ticks(np.log10(vals), labels=[plain_number(v) for v in vals])
    cb.ax.minorticks_off()
    cb.set_label(label)


# ---------------------------------------------------------------------------------- legends
def data_points(ax, renderer=None, dense: bool = False) -> np.ndarray:
    """``[n, 2]`` display coordinates of the data drawn in ``ax``, inside its box: the
    vertices of its lines (with ``dense``, also points along their segments) and the offsets
    of its scatter collections. Reference lines (``axhline``: not in data coordinates) and
    error bars are left out."""
    from matplotlib.collections import PathCollection

    pts = []
    for line in ax.lines:
        if not line.get_visible() or line.get_transform() != ax.transData:
            continue
        xy = np.asarray(line.get_xydata(), dtype=float)
        if xy.size == 0:
            continue
        d = line.get_transform().transform(xy)
        d = d[np.isfinite(d).all(axis=1)]
        if dense and len(d) > 1 and line.get_linestyle() not in ("None", "", " "):
            t = np.linspace(0, 1, 9)[1:-1, None, None]
            d = np.concatenate([d, (d[:-1] + t * (d[1:] - d[:-1])).reshape(-1, 2)])
        pts.append(d)
    for c in ax.collections:
        if isinstance(c, PathCollection) and c.get_visible() and len(c.get_offsets()):
            d = c.get_offset_transform().transform(np.asarray(c.get_offsets(), dtype=float))
            pts.append(d[np.isfinite(d).all(axis=1)])
    if not pts:
        return np.zeros((0, 2))
    p = np.concatenate(pts)
    box = ax.get_window_extent(renderer)
    inside = ((p[:, 0] >= box.x0 - 0.5) & (p[:, 0] <= box.x1 + 0.5)
              & (p[:, 1] >= box.y0 - 0.5) & (p[:, 1] <= box.y1 + 0.5))
    return p[inside]


def _renderer(fig):
    # A Figure made without pyplot has a bare canvas: give it Agg's (headless) to lay out.
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def legend_covers(legend, axes=None, renderer=None, dense: bool = False) -> int:
    """How many data points (:func:`data_points` of ``axes``, default: every axes of the
    legend's figure) lie inside ``legend``'s box, in display coordinates."""
    fig = legend.get_figure(root=True)
    renderer = renderer or _renderer(fig)
    box = legend.get_window_extent(renderer)
    n = 0
    for ax in (fig.axes if axes is None else axes):
        p = data_points(ax, renderer, dense)
        n += int(((p[:, 0] > box.x0) & (p[:, 0] < box.x1) & (p[:, 1] > box.y0)
                  & (p[:, 1] < box.y1)).sum())
    return n


_INSIDE = ("upper right", "upper left", "lower left", "lower right", "center right",
           "center left", "upper center", "lower center")


def _below(ax, legend, renderer) -> None:
    """Move ``legend`` under ``ax``'s tick labels and x label (an offset in inches: it stays
    clear of them when the layout resizes the axes)."""
    from matplotlib.transforms import ScaledTranslation

    fig = ax.get_figure(root=True)
    box = ax.get_window_extent(renderer)
    tight = ax.xaxis.get_tightbbox(renderer)
    gap = ((box.y0 - tight.y0) if tight is not None else 0.0) / fig.dpi + 0.04
    trans = ax.transAxes + ScaledTranslation(0, -gap, fig.dpi_scale_trans)
    legend.set_loc("upper center")
    legend.set_bbox_to_anchor((0.5, 0.0), transform=trans)
    legend._diffeosense_outside = True


def _place(ax, legend, renderer) -> None:
    axes = [ax]
    for loc in _INSIDE:
        legend.set_loc(loc)
        lb, ab = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        if lb.width > ab.width or lb.height > ab.height:
            break  # it does not fit inside at all
        if legend_covers(legend, axes, renderer, dense=True) == 0:
            return
    _below(ax, legend, renderer)


def finalize(fig):
    """Plain-number ticks on every log axis, constrained layout (unless the figure has a
    layout already), and every axes legend moved off the data (see the module docstring).
    Returns ``fig``."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            if isinstance(axis.get_major_locator(), FixedLocator):  # ticks chosen by the figure
                if isinstance(axis.get_major_formatter(), LogFormatter):
                    axis.set_major_formatter(PlainFormatter())
                axis.set_minor_formatter(NullFormatter())
            elif isinstance(axis.get_major_formatter(), LogFormatter):  # matplotlib's default
                log_axis(axis)
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    for _ in range(3):
        renderer = _renderer(fig)
        fig.draw_without_rendering()
        moved = False
        for ax in fig.axes:
            leg = ax.get_legend()
            if leg is None or getattr(leg, "_diffeosense_outside", False):
                continue
            if legend_covers(leg, [ax], renderer, dense=True):
                _place(ax, leg, renderer)
                moved = True
        if not moved:
            break
    fig.draw_without_rendering()
    return fig
