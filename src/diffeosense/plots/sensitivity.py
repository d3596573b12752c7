"""Figures (the edge of the library: matplotlib is imported here only).

:func:`plot_sensitivity` draws D, G and R against depth, one panel each, log y axis, error bars
(one standard error), the layer names on the x axis; several results (init vs trained, several
nets) are overlaid on the same depth axis.

>>> import pandas as pd
>>> from diffeosense.sensitivity import SensitivityResult
>>> t = pd.DataFrame({"layer": ["input", "conv", "output"], "depth": [0, 1, 2],
...                   "kind": ["input", "conv", "output"], "view": "full", "channel": -1,
...                   "D": [1.0, 0.5, 0.1], "G": [1.0, 2.0, 3.0], "R": [1.0, 0.25, 0.03],
...                   "D_se": 0.01, "G_se": 0.01, "R_se": 0.01})
>>> fig = plot_sensitivity(SensitivityResult(t))
>>> [ax.get_yscale() for ax in fig.axes]
['log', 'log', 'log']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The object-oriented API (no pyplot): no global backend switch, works headless and in CI.
from matplotlib.figure import Figure

from . import style
from ._save import save_figure

__all__ = ["plot_sensitivity"]

_LABELS = {"D": "D  (diffeo)", "G": "G  (noise)", "R": "R = D / G"}


def _as_results(results):
    from ..sensitivity import SensitivityResult

    if isinstance(results, SensitivityResult):
        return [results]
    out = []
    for r in results:
        out.append(r if isinstance(r, SensitivityResult) else SensitivityResult.load(r))
    return out


@style.styled()
def plot_sensitivity(results, labels: Sequence[str] | None = None, *, view: str = "full",
                     quantities: Sequence[str] = ("D", "G", "R"), title: str | None = None,
                     path: str | Path | None = None):
    """D, G, R against depth (log y, +-1 SE error bars, layer names on the x axis).

    Args:
        results: a :class:`~diffeosense.sensitivity.SensitivityResult`, or a list of results /
            saved result paths, overlaid.
        labels: legend entries (default: the results' ``label`` / ``model`` config or #i).
        view: ``"full"`` (default) or ``"channel-mean"`` rows of the tables.
        path: also save the figure there (PNG/PDF/SVG; written atomically).

    Returns:
        the matplotlib ``Figure`` (one panel per quantity, sharing the x axis).
    """
    results = _as_results(results)
    if not results:
        raise ValueError("nothing to plot: give at least one result")
    tables = []
    for r in results:
        df = r.table[r.table.view == view].sort_values("depth")
        if df.empty:
            raise ValueError(f"a result has no {view!r} rows (views: "
                             f"{sorted(set(r.table.view))})")
        tables.append(df)
    if labels is None:
        labels = [r.config.get("label") or r.config.get("model") or f"#{i}"
                  for i, r in enumerate(results)]
    # The x axis: the union of depths, labelled by the first table that has each depth.
    names: dict[int, str] = {}
    for df in tables:
        for d, n in zip(df.depth, df.layer, strict=True):
            names.setdefault(int(d), str(n))
    depths = sorted(names)
    n_layers = len(depths)
    width = min(max(6.0, 0.22 * n_layers + 2.0), 30.0)
    fig = Figure(figsize=(width, 2.4 * len(quantities) + 1.6))
    axes = fig.subplots(len(quantities), 1, sharex=True, squeeze=False)
    axes = axes[:, 0]
    for i, (df, label) in enumerate(zip(tables, labels, strict=True)):
        color = f"C{i % 10}"
        for ax, q in zip(axes, quantities, strict=True):
            y = df[q].to_numpy(dtype=float)
            se = df.get(f"{q}_se", None)
            se = np.zeros_like(y) if se is None else np.nan_to_num(se.to_numpy(dtype=float))
            ok = np.isfinite(y) & (y > 0)
            x = df.depth.to_numpy()[ok]
            y, se = y[ok], se[ok]
            # Log axis: clip the lower bar so it stays positive.
            lower = np.minimum(se, 0.9 * y)
            ax.errorbar(x, y, yerr=[lower, se], color=color, marker="o", ms=3, lw=1.2,
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
    ax.set_xticks(depths)
    fontsize = 8 if n_layers <= 30 else 6
    ax.set_xticklabels([names[d] for d in depths], rotation=90, fontsize=fontsize)
    ax.set_xlabel("layer (forward order)")
    ax.set_xlim(min(depths) - 0.5, max(depths) + 0.5)
    if title is None:
        cfg = results[0].config
        n = int(tables[0].n_probes.iloc[0]) if "n_probes" in tables[0] else None
        parts = [str(cfg.get("model", "")), str(cfg.get("data", "")),
                 f"{n} probes" if n else "", f"view {view}" if view != "full" else ""]
        title = "  |  ".join(p for p in parts if p) or None
    if title:
        fig.suptitle(title)
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig
