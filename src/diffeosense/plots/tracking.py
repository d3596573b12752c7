"""Figures of a sensitivity-tracking table (the edge of the library: matplotlib only here).

:func:`plot_tracking` draws, from a ``track.csv`` / ``track.parquet`` written while training
(:mod:`diffeosense.tracking`):

* top row: heatmaps of D, G and R over (layer, epoch) on log colour scales (colour bars
  labelled with the values: 0.1, 1, 10), layers in forward order from top to bottom, one
  column per tracked epoch (R on a diverging scale centred on R = 1);
* bottom row: the output's D, G and R against epoch (log y, +-1 SE), and the train and test
  error against epoch.

>>> import pandas as pd
>>> from diffeosense.tracking import TRACK_COLUMNS
>>> rows = [dict(epoch=e, layer=n, depth=d, kind=n, view="full", D=1 / (1 + e * d),
...              G=1.0 + e, R=1 / (1 + e * d) / (1.0 + e), D_se=0.01, G_se=0.01, R_se=0.01,
...              n_probes=50, train_loss=1.0, train_error=0.5 / (1 + e),
...              test_loss=1.0, test_error=0.6 / (1 + e))
...         for e in (0, 1, 2) for d, n in enumerate(["input", "conv", "output"])]
>>> fig = plot_tracking(pd.DataFrame(rows, columns=TRACK_COLUMNS))
>>> [ax.get_title() for ax in fig.axes[:3]]
['D  (diffeo)', 'G  (noise)', 'R = D / G']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from . import style
from ._save import save_figure

__all__ = ["plot_tracking", "track_matrix"]


def _as_table(track):
    if isinstance(track, str | Path):
        from ..tracking import load_track

        return load_track(track)[0]
    return track


def track_matrix(track, quantity: str, view: str = "full"):
    """``(layers, epochs, M)``: ``M[i, j]`` = ``quantity`` of layer ``i`` (forward order) at
    tracked epoch ``j`` (NaN where not measured); ``M: [n_layers, n_epochs]``.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"epoch": [0, 0, 2], "layer": ["b", "a", "a"], "depth": [1, 0, 0],
    ...                   "view": "full", "D": [1.0, 2.0, 3.0]})
    >>> layers, epochs, m = track_matrix(t, "D")
    >>> layers, epochs, m.tolist()
    (['a', 'b'], [0, 2], [[2.0, 3.0], [1.0, nan]])
    """
    df = _as_table(track)
    df = df[df.view == view]
    if df.empty:
        raise ValueError(f"the tracking table has no {view!r} rows")
    order = df.drop_duplicates("layer").sort_values("depth", kind="stable")
    layers = list(order.layer)
    epochs = sorted(int(e) for e in df.epoch.unique())
    wide = df.pivot_table(index="layer", columns="epoch", values=quantity, aggfunc="first",
                          dropna=False)
    wide = wide.reindex(index=layers, columns=epochs)
    return layers, epochs, wide.to_numpy(dtype=float)


_TITLES = {"D": "D  (diffeo)", "G": "G  (noise)", "R": "R = D / G"}


@style.styled()
def plot_tracking(track, *, view: str = "full", title: str | None = None,
                  path: str | Path | None = None, meta: dict | None = None):
    """Heatmaps of log10 D, G, R over (layer, epoch) and the output's curves against epoch.

    Args:
        track: a tracking table (``pandas.DataFrame`` with the columns of
            :data:`diffeosense.tracking.TRACK_COLUMNS`) or the path of one.
        view: ``"full"`` (default) or ``"channel-mean"`` rows.
        title: figure title (default: the model, the data and the scale of the measurement:
            epochs tracked and probes, from the table's ``model`` / ``data`` columns or
            ``meta`` when present).
        meta: the tracking run's config (``model``, ``data``) for the default title.
        path: also save the figure there (PNG/PDF/SVG; written atomically).

    Returns:
        the matplotlib ``Figure``: axes 0-2 are the heatmaps, then their colorbars, then the
        output-curves axis and the error axis.
    """
    if meta is None and isinstance(track, str | Path):
        meta = _meta(track)
    df = _as_table(track)
    layers, epochs, _ = track_matrix(df, "D", view)
    n_l, n_e = len(layers), len(epochs)
    width = min(max(style.TWO_COLUMNS, 3 * (0.25 * n_e + 1.6)), 30.0)
    top = min(max(2.2, 0.12 * n_l + 1.0), 12.0)
    fig = Figure(figsize=(width, top + 2.4), layout="constrained")
    gs = fig.add_gridspec(2, 3, height_ratios=[top, 2.2])
    heat = [fig.add_subplot(gs[0, i]) for i in range(3)]
    for ax, q in zip(heat, ("D", "G", "R"), strict=True):
        _, _, m = track_matrix(df, q, view)
        with np.errstate(divide="ignore", invalid="ignore"):
            logm = np.where(m > 0, np.log10(m), np.nan)
        finite = logm[np.isfinite(logm)]
        norm = None
        if q == "R" and finite.size and finite.min() < 0 < finite.max():
            norm = TwoSlopeNorm(vcenter=0.0, vmin=finite.min(), vmax=finite.max())
        im = ax.imshow(logm, aspect="auto", interpolation="nearest", norm=norm,
                       cmap="RdBu_r" if q == "R" else "viridis")
        cb = fig.colorbar(im, ax=ax, fraction=0.06, pad=0.02)
        style.log_colorbar(cb, f"{q} (log scale)")
        ax.set_title(_TITLES[q])
        step = max(1, n_e // 12)
        ax.set_xticks(range(0, n_e, step))
        ax.set_xticklabels([str(epochs[j]) for j in range(0, n_e, step)])
        ax.set_xlabel("epoch")
        ystep = max(1, n_l // 40)
        ax.set_yticks(range(0, n_l, ystep))
        ax.set_yticklabels([layers[i] for i in range(0, n_l, ystep)] if ax is heat[0] else [],
                           fontsize=6 if n_l <= 30 else 4.5)
    heat[0].set_ylabel("layer (forward order)")

    curves = fig.add_subplot(gs[1, :2])
    out = _output_rows(df, view)
    for i, q in enumerate(("D", "G", "R")):
        y = out[q].to_numpy(dtype=float)
        se = np.nan_to_num(out[f"{q}_se"].to_numpy(dtype=float))
        ok = np.isfinite(y) & (y > 0)
        x, y, se = out.epoch.to_numpy()[ok], y[ok], se[ok]
        curves.errorbar(x, y, yerr=[np.minimum(se, 0.9 * y), se], color=style.colour(i),
                        marker="os^"[i], ms=3, capsize=2, label=_TITLES[q])
    curves.set_yscale("log")
    style.integer_axis(curves.xaxis)
    curves.axhline(1.0, color="0.5", lw=0.8, ls=":")
    curves.set_xlabel("epoch")
    curves.set_ylabel(f"D, G, R at layer {out.layer.iloc[0]!r}")
    curves.grid(True, which="major", alpha=0.3)
    curves.legend()

    err = fig.add_subplot(gs[1, 2])
    for i, split in enumerate(("train", "test")):
        y = out[f"{split}_error"].to_numpy(dtype=float)
        ok = np.isfinite(y)
        if ok.any():
            err.plot(out.epoch.to_numpy()[ok], y[ok], marker="os"[i], ms=3,
                     color=style.colour(i + 3), label=f"{split} error")
    err.set_xlabel("epoch")
    err.set_ylabel("error")
    style.integer_axis(err.xaxis)
    err.grid(True, alpha=0.3)
    if err.get_legend_handles_labels()[0]:
        err.legend()
    if title is None:
        title = _title(df, meta or {}, epochs)
    fig.suptitle(title)
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig


def _output_rows(df, view: str):
    d = df[df.view == view]
    name = "output" if (d.layer == "output").any() else d.loc[d.depth.idxmax(), "layer"]
    return d[d.layer == name].sort_values("epoch").reset_index(drop=True)


def _meta(path) -> dict:
    """The config saved beside a tracking table (``config.json`` of its run folder, or the
    table's sidecar), for the figure's title; empty when there is none."""
    import json

    path = Path(path)
    for p in (path.parent / "config.json", path.parent.parent / "config.json"):
        if p.is_file():
            try:
                cfg = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict):
                cfg = cfg.get("config", cfg)
                return cfg.get("train", cfg) if isinstance(cfg, dict) else {}
    return {}


def _title(df, meta: dict, epochs) -> str:
    """``model | data | epochs 0-20, 50 probes`` from the table's columns or the run's config."""
    def first(key):
        if key in df and len(df) and str(df[key].iloc[0]) not in ("", "nan", "None"):
            return str(df[key].iloc[0])
        v = meta.get(key)
        if isinstance(v, dict):
            v = v.get("name")
        return str(v) if v not in (None, "") else ""

    model = first("model")
    if model:
        from ..models.names import display_name

        model = display_name(model, meta.get("model_kwargs") if "model" not in df else None)
    n = int(df.n_probes.iloc[0]) if "n_probes" in df and len(df) else 0
    scale = f"epochs {epochs[0]}-{epochs[-1]}" if epochs else ""
    scale += f", {n} probes" if n else ""
    parts = [model, first("data"), scale, "same diffeos and noise every epoch"]
    return "sensitivities during training: " + "  |  ".join(p for p in parts if p)
