"""Figure of the 2D scale-detection experiment on deep nets (the paper's Figs. 8, 9).

Top row: test error (best checkpoint) against D, G and R at the output, one marker per net
and seed (log-log). Bottom row: D_k, G_k, R_k of the activation layers against the relative
depth k / K, one line per net, after training (solid) and at initialization (dotted).

>>> import pandas as pd
>>> summary = pd.DataFrame({"model": ["a", "b"], "seed": [0, 0], "test_error": [0.1, 0.3],
...                         "D": [0.1, 0.5], "G": [1.0, 0.5], "R": [0.1, 1.0]})
>>> sens = pd.DataFrame([{"model": m, "seed": 0, "state": st, "layer": f"relu{k}",
...                       "kind": "activation", "depth": k, "D": 1 / k, "G": k, "R": 1 / k**2}
...                      for m in "ab" for st in ("init", "trained") for k in (1, 2, 3)])
>>> len(plot_scale_detection_2d(summary, sens).axes)
6
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..models.names import display_name
from . import style
from ._save import save_figure

__all__ = ["plot_scale_detection_2d", "save_result_figure"]


@style.styled()
def plot_scale_detection_2d(summary, sensitivity, title: str | None = None,
                            path: str | Path | None = None):
    """Test error vs output D, G, R (top) and D_k, G_k, R_k vs relative depth (bottom).

    One colour and marker per net (its family's marker), the same in both rows; one legend
    under the panels: the nets, and trained (solid) vs initialization (dotted).

    Args:
        summary: one row per unit (``model, seed, test_error, D, G, R``).
        sensitivity: tidy rows ``model, seed, state, layer, kind, depth, D, G, R`` (full view).
        title: figure title; path: also save the figure there (atomic).
    """
    from matplotlib.lines import Line2D

    fig = Figure(figsize=style.figsize(2, 5.2), layout="constrained")
    axes = fig.subplots(2, 3)
    models = list(dict.fromkeys(summary.model))
    colors = {m: style.colour(i) for i, m in enumerate(models)}
    names = {m: display_name(m) for m in models}
    marks = style.markers(list(names.values()))
    for col, q in enumerate(("D", "G", "R")):
        ax = axes[0, col]
        for m in models:
            s = summary[summary.model == m]
            ax.scatter(s[q], s.test_error, color=colors[m], marker=marks[names[m]], s=22,
                       edgecolor="k", linewidth=0.4)
        ax.set_xscale("log")
        ax.set_xlabel(f"{q} at the output (trained)")
        ax.grid(True, alpha=0.3)
        ax = axes[1, col]
        for m in models:
            for state, ls in (("trained", "-"), ("init", ":")):
                df = sensitivity[(sensitivity.model == m) & (sensitivity.state == state)
                                 & (sensitivity.kind == "activation")]
                if df.empty:
                    continue
                g = df.groupby("depth", as_index=False)[q].agg(
                    lambda v: float(np.exp(np.log(v).mean())))
                k = np.arange(1, len(g) + 1) / len(g)
                ax.plot(k, g[q], ls=ls, marker=marks[names[m]] if ls == "-" else None,
                        ms=2.5, color=colors[m])
        ax.set_yscale("log")
        ax.set_xlabel("relative depth k / K (activations)")
        ax.set_title(f"{q}_k")
        ax.grid(True, alpha=0.3)
    axes[0, 0].set_ylabel("test error (best checkpoint)")
    handles = [Line2D([], [], color=colors[m], marker=marks[names[m]], mec="k", mew=0.4,
                      label=names[m]) for m in models]
    handles += [Line2D([], [], color="0.3", ls="-", label="trained"),
                Line2D([], [], color="0.3", ls=":", label="initialization")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
               frameon=False)
    fig.suptitle(title or "scale detection 2D on deep nets")
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig


def save_result_figure(result, path: str | Path | None = None) -> Path:
    """Draw a :class:`~diffeosense.experiments.scale_detection_2d.DeepScaleDetectionResult`
    (default path: ``<run folder>/scale_detection_2d.png``)."""
    cfg = result.config
    path = Path(path) if path is not None else result.out_dir / "scale_detection_2d.png"
    lr = ", ".join([f"lr {cfg.lr:g}"] + [f"{m} {v:g}" for m, v in cfg.lr_by_model.items()])
    title = (f"scale detection 2D ({cfg.preset} preset): d = {cfg.size}, xi = {cfg.xi}, "
             f"gap = {cfg.gap}, P = {cfg.train_size}, test {cfg.test_size_value}\n"
             f"{cfg.epochs} epochs, {lr}, {cfg.n_probes} probes, "
             f"{len(cfg.seeds)} seed(s); move: pixel-move; best checkpoint")
    plot_scale_detection_2d(result.summary, result.sensitivity, title=title, path=path)
    return path
