"""Figures (the edge of the library: matplotlib is imported here only).

:func:`plot_sensitivity` draws D, G and R against depth, one panel each, log y axis, error bars
(one standard error); several results (init vs trained, several nets) are overlaid. The x axis
(``x=``) is one of

* ``"depth"``: the layer's index in the forward pass (``Layer.depth``, input = 0); the ticks
  carry the layer names when every result has the same names at the same depths;
* ``"relative-depth"``: ``depth / max depth`` of *that* result's rows, in [0, 1], so that nets
  of different depths share one axis (each curve keeps its own number of points);
* ``"layer"``: the layer names as categories, in forward order; only when the results' names
  agree (each name at one depth, each depth with one name).

The default is ``"depth"`` when the names agree and ``"relative-depth"`` when they do not: a
net's layers are never drawn against another net's names. Each curve is named by the result's
``label`` (else its ``model``: the spec it was created from) and, when the results were
measured on different datasets, its ``data`` (else the title names the one dataset).

>>> import pandas as pd
>>> from diffeosense.sensitivity import SensitivityResult
>>> t = pd.DataFrame({"layer": ["input", "conv", "output"], "depth": [0, 1, 2],
...                   "kind": ["input", "conv", "output"], "view": "full", "channel": -1,
...                   "D": [1.0, 0.5, 0.1], "G": [1.0, 2.0, 3.0], "R": [1.0, 0.25, 0.03],
...                   "D_se": 0.01, "G_se": 0.01, "R_se": 0.01})
>>> fig = plot_sensitivity(SensitivityResult(t))
>>> [ax.get_yscale() for ax in fig.axes]
['log', 'log', 'log']
>>> deeper = SensitivityResult(t.assign(layer=["input", "a", "out"], depth=[0, 1, 4]))
>>> fig = plot_sensitivity([SensitivityResult(t), deeper])   # names differ: relative depth
>>> [bars.lines[0].get_xdata().tolist() for bars in fig.axes[0].containers]
[[0.0, 0.5, 1.0], [0.0, 0.25, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The object-oriented API (no pyplot): no global backend switch, works headless and in CI.
from matplotlib.figure import Figure

from . import style
from ._save import save_figure

__all__ = ["plot_sensitivity", "curve_label", "curve_labels", "X_AXES"]

_LABELS = {"D": "D  (diffeo)", "G": "G  (noise)", "R": "R = D / G"}
X_AXES = ("depth", "relative-depth", "layer")


def _as_results(results):
    from ..sensitivity import SensitivityResult

    if isinstance(results, SensitivityResult):
        return [results]
    out = []
    for r in results:
        out.append(r if isinstance(r, SensitivityResult) else SensitivityResult.load(r))
    return out


def curve_label(config: dict, default: str = "", data: bool = True) -> str:
    """The name of a result's curve: its ``label`` (else its ``model``: the spec it was
    created from, recorded by ``measure``) and, with ``data``, when recorded and not already
    in the name, the ``data`` it was measured on: ``"lenet (mnist-embedded)"``.

    >>> curve_label({"model": "lenet", "label": "lenet", "data": "mnist-embedded"})
    'lenet (mnist-embedded)'
    >>> curve_label({}, "#0")
    '#0'
    """
    name = str(config.get("label") or config.get("model") or default)
    where = config.get("data") if data else None
    if where and str(where) not in name:
        name = f"{name} ({where})" if name else str(where)
    return name


def curve_labels(configs: Sequence[dict], fallbacks: Sequence[str] | None = None) -> list[str]:
    """:func:`curve_label` of each config (``fallbacks[i]``, else ``#i``, when it names
    nothing), with ``#i`` added to names that would repeat (two seeds of one net). The
    dataset is named only when the results were measured on different ones (else the
    figure's title names it).

    >>> curve_labels([{"model": "fc2"}, {"model": "fc2"}, {"model": "lenet"}])
    ['fc2 #0', 'fc2 #1', 'lenet']
    >>> curve_labels([{"model": "fc2", "data": "a.npz"}, {"model": "fc2", "data": "b.npz"}])
    ['fc2 (a.npz)', 'fc2 (b.npz)']
    """
    several = len({str(c.get("data")) for c in configs}) > 1
    out = [curve_label(c, (fallbacks[i] if fallbacks else "") or f"#{i}", data=several)
           for i, c in enumerate(configs)]
    return [f"{n} #{i}" if out.count(n) > 1 else n for i, n in enumerate(out)]


def _layer_names_agree(tables) -> bool:
    """Whether the results name their layers alike: every depth has one name across them and
    every name one depth (a result may hold only some of the layers)."""
    by_depth: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for df in tables:
        for d, n in zip(df.depth, df.layer, strict=True):
            d, n = int(d), str(n)
            if by_depth.setdefault(d, n) != n or by_name.setdefault(n, d) != d:
                return False
    return True


def _x_positions(df, x: str, order: dict[str, int]) -> np.ndarray:
    depth = df.depth.to_numpy(dtype=float)
    if x == "depth":
        return depth
    if x == "relative-depth":
        top = depth.max()
        return depth / top if top > 0 else np.zeros_like(depth)
    return np.array([order[str(n)] for n in df.layer], dtype=float)


@style.styled()
def plot_sensitivity(results, labels: Sequence[str] | None = None, *, view: str = "full",
                     x: str | None = None, quantities: Sequence[str] = ("D", "G", "R"),
                     title: str | None = None, path: str | Path | None = None):
    """D, G, R against depth (log y, +-1 SE error bars), one curve per result.

    Args:
        results: a :class:`~diffeosense.sensitivity.SensitivityResult`, or a list of results /
            saved result paths, overlaid.
        labels: legend entries (default: :func:`curve_labels` of the results' configs: each
            one's label or model spec and its dataset; repeated names get ``#i``).
        view: ``"full"`` (default) or ``"channel-mean"`` rows of the tables.
        x: ``"depth"``, ``"relative-depth"`` (``depth / max depth`` of each result, in
            [0, 1]) or ``"layer"`` (names as categories; refused when the results' names
            differ); default ``"depth"`` when the names agree, else ``"relative-depth"``.
        path: also save the figure there (PNG/PDF/SVG; written atomically).

    Returns:
        the matplotlib ``Figure`` (one panel per quantity, sharing the x axis).
    """
    results = _as_results(results)
    if not results:
        raise ValueError("nothing to plot: give at least one result")
    if x is not None and x not in X_AXES:
        raise ValueError(f"x must be one of {X_AXES}, got {x!r}")
    tables = []
    for r in results:
        df = r.table[r.table.view == view].sort_values("depth")
        if df.empty:
            raise ValueError(f"a result has no {view!r} rows (views: "
                             f"{sorted(set(r.table.view))})")
        tables.append(df)
    if labels is None:
        labels = curve_labels([r.config for r in results])
    elif len(labels) != len(results):
        raise ValueError(f"got {len(labels)} labels for {len(results)} results")
    agree = _layer_names_agree(tables)
    if x is None:
        x = "depth" if agree else "relative-depth"
    if x == "layer" and not agree:
        raise ValueError("the results' layer names differ (different architectures?): they "
                         "cannot share a layer axis; use x='relative-depth' (CLI: --x "
                         "relative-depth), each net's depth / its last depth, or x='depth'")
    # The named layers in forward order (the union over the results; they agree).
    names: dict[int, str] = {}
    for df in tables:
        for d, n in zip(df.depth, df.layer, strict=True):
            names.setdefault(int(d), str(n))
    depths = sorted(names)
    order = {names[d]: i for i, d in enumerate(depths)}
    n_ticks = max(len(df) for df in tables) if x == "relative-depth" else len(depths)
    width = min(max(6.0, 0.22 * n_ticks + 2.0), 30.0)
    fig = Figure(figsize=(width, 2.4 * len(quantities) + 1.6))
    axes = fig.subplots(len(quantities), 1, sharex=True, squeeze=False)
    axes = axes[:, 0]
    for i, (df, label) in enumerate(zip(tables, labels, strict=True)):
        color = f"C{i % 10}"
        xs = _x_positions(df, x, order)
        for ax, q in zip(axes, quantities, strict=True):
            y = df[q].to_numpy(dtype=float)
            se = df.get(f"{q}_se", None)
            se = np.zeros_like(y) if se is None else np.nan_to_num(se.to_numpy(dtype=float))
            ok = np.isfinite(y) & (y > 0)
            y, se = y[ok], se[ok]
            # Log axis: clip the lower bar so it stays positive.
            lower = np.minimum(se, 0.9 * y)
            ax.errorbar(xs[ok], y, yerr=[lower, se], color=color, marker="o", ms=3, lw=1.2,
                        capsize=2, label=label if len(results) > 1 or label else None)
    for ax, q in zip(axes, quantities, strict=True):
        ax.set_yscale("log")
        ax.set_ylabel(_LABELS.get(q, q))
        ax.grid(True, which="major", alpha=0.3)
        if q == "R":
            ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    if len(results) > 1:
        axes[0].legend(loc="best")
    ax = axes[-1]
    fontsize = 8 if len(depths) <= 30 else 6
    if x == "relative-depth":
        ax.set_xlabel("relative depth (layer index / the net's last measured index)")
        ax.set_xlim(-0.04, 1.04)
    elif x == "layer":
        ax.set_xticks(range(len(depths)))
        ax.set_xticklabels([names[d] for d in depths], rotation=90, fontsize=fontsize)
        ax.set_xlabel("layer (forward order)")
        ax.set_xlim(-0.5, len(depths) - 0.5)
    else:
        if agree:  # one name per depth: the ticks can carry them
            ax.set_xticks(depths)
            ax.set_xticklabels([names[d] for d in depths], rotation=90, fontsize=fontsize)
        ax.set_xlabel("layer (forward order)" if agree else "depth (layer index, input = 0)")
        ax.set_xlim(min(depths) - 0.5, max(depths) + 0.5)
    if title is None:
        cfg = results[0].config
        n = int(tables[0].n_probes.iloc[0]) if "n_probes" in tables[0] else None
        one = len(results) == 1
        data = {str(r.config.get("data", "")) for r in results}
        parts = [str(cfg.get("model", "")) if one else "", data.pop() if len(data) == 1 else "",
                 f"{n} probes" if n else "", f"view {view}" if view != "full" else ""]
        title = "  |  ".join(p for p in parts if p) or None
    if title:
        fig.suptitle(title)
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig
