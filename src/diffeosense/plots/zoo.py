"""The zoo's figure: test error against R = D / G at the output, one point per model.

>>> import pandas as pd
>>> t = pd.DataFrame({"model": ["a", "b", "c"], "layer": "output", "depth": 3,
...                   "view": "full", "R": [0.5, 2.0, 1.0], "R_se": 0.1,
...                   "test_error": [0.2, 0.6, float("nan")], "test_error_se": 0.01,
...                   "error_reason": ["", "", "the dataset has no labels"]})
>>> fig = plot_zoo(t)
>>> ax = fig.axes[0]
>>> ax.get_xscale(), [t.get_text() for t in ax.texts][:2]
('log', ['a', 'b'])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._save import save_figure

__all__ = ["plot_zoo", "last_layer_rows"]


def last_layer_rows(table, view: str = "full"):
    """One row per model: its deepest measured layer (the output when measured) of ``view``,
    in the table's model order."""
    df = table[table.view == view]
    idx = df.groupby("model", sort=False)["depth"].idxmax()
    return df.loc[idx.to_numpy()].reset_index(drop=True)


def plot_zoo(table, *, view: str = "full", title: str | None = None,
             path: str | Path | None = None):
    """Test error (%) against R at the output (log x axis), one labelled point per model of a
    zoo table (:func:`diffeosense.experiments.zoo.run_zoo`), error bars of one standard error
    (R's from the probes, the error's binomial ``sqrt(e (1 - e) / n)``). Models without a
    test error (no labels, other classes) are named in a note below the axes.

    Returns the matplotlib ``Figure``; ``path``: also saved there (atomically).
    """
    rows = last_layer_rows(table, view)
    if rows.empty:
        raise ValueError(f"the zoo table has no {view!r} rows")
    has = rows[np.isfinite(rows.test_error.to_numpy(dtype=float))
               & np.isfinite(rows.R.to_numpy(dtype=float)) & (rows.R > 0)]
    missing = rows.drop(has.index)
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    for i, r in enumerate(has.itertuples()):
        e, se = 100 * float(r.test_error), 100 * float(getattr(r, "test_error_se", 0.0) or 0)
        ax.errorbar([r.R], [e], xerr=[[min(float(r.R_se), 0.9 * r.R)], [float(r.R_se)]],
                    yerr=[[se], [se]], color=f"C{i % 10}", marker="o", ms=5, capsize=2)
        ax.annotate(str(r.model), (r.R, e), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xscale("log")
    layer = "the output" if set(rows.layer) == {"output"} else "the last measured layer"
    ax.set_xlabel(f"R = D / G at {layer}")
    ax.set_ylabel("test error (%)")
    ax.grid(True, which="both", alpha=0.3)
    if has.empty:
        ax.text(0.5, 0.5, "no model has a test error", transform=ax.transAxes, ha="center")
    if len(missing):
        why = "; ".join(f"{r.model}: {r.error_reason or 'no test error'} (R {r.R:.3g})"
                        for r in missing.itertuples())
        fig.text(0.01, 0.005, f"not shown: {why}", fontsize=6, wrap=True)
    if title is None and "data" in table and len(table):
        n = int(table.n_probes.iloc[0]) if "n_probes" in table else None
        title = f"{table.data.iloc[0]}" + (f"  |  {n} probes" if n else "")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 if len(missing) else 0, 1, 1))
    if path is not None:
        save_figure(fig, path)
    return fig
