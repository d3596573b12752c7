"""Figures of the pooling engine (:mod:`diffeosense.pooling`): filter spectra by depth, and
D/G/R of the original net beside its channel-shuffled copies.

>>> import torch, torch.nn as nn
>>> from diffeosense.pooling import filter_spectra
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
>>> fig = plot_spectra(filter_spectra(net))
>>> fig.axes[0].get_ylabel()
'fraction on eigenvalue 0'
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# The object-oriented API (no pyplot): no global backend switch, works headless and in CI.
from matplotlib.figure import Figure

from . import style
from ._save import save_figure

__all__ = ["plot_spectra", "plot_pooling"]

_MAX_PANELS = 20


def _title(config: dict, extra: str = "") -> str:
    m = config.get("measure", config)
    parts = [str(m.get("model", "") or ""), str(m.get("data", "") or ""), extra]
    return "  |  ".join(p for p in parts if p)


@style.styled()
def plot_spectra(trained, init=None, *, labels: tuple[str, str] = ("trained", "init"),
                 title: str | None = None, path: str | Path | None = None):
    """Filter spectra by depth: the fraction on the homogeneous mode per layer (top), and per
    layer the fraction per eigenmode (``fraction / multiplicity``) against the eigenvalue.

    Args:
        trained: a :class:`~diffeosense.pooling.FilterSpectra` (or a path to one).
        init: the same net at initialization, drawn dashed (optional).
        path: also save the figure there (atomic).

    A filter with i.i.d. entries puts ``1 / K`` on every mode (dotted line), K = kernel size.
    """
    from ..pooling import FilterSpectra

    specs = [s if isinstance(s, FilterSpectra) else FilterSpectra.load(s)
             for s in ([trained] + ([init] if init is not None else []))]
    tabs = [s.to_frame() for s in specs]
    spatial = tabs[0][tabs[0].eigenvalue.notna()]
    layers = list(dict.fromkeys(spatial.layer))
    if not layers:
        raise ValueError("no convolution with a spatial extent to plot (only 1x1 or none)")
    shown = layers[:_MAX_PANELS]
    ncol = min(4, len(shown))
    nrow = math.ceil(len(shown) / ncol)
    fig = Figure(figsize=(max(style.TWO_COLUMNS, 1.8 * ncol + 0.6), 2.2 + 1.7 * nrow),
                 layout="constrained")
    gs = fig.add_gridspec(1 + nrow, ncol, height_ratios=[1.25] + [1.0] * nrow)
    styles = [dict(color=style.stage_colour("trained"), ls="-", marker="o"),
              dict(color=style.stage_colour("init"), ls="--", marker="s")]
    # Top: fraction on eigenvalue 0 along the convolutions.
    ax = fig.add_subplot(gs[0, :])
    for spec, sty, label in zip(specs, styles, labels, strict=False):
        h = spec.homogeneous().set_index("layer").reindex(layers)
        ax.plot(range(len(layers)), h.fraction, ms=4, label=label, **sty)
    white = specs[0].homogeneous().set_index("layer").reindex(layers).white
    ax.step(range(len(layers)), white, where="mid", color="k", ls=":", lw=1,
            label="white filter (1/K)")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30 if len(layers) > 6 else 0, ha="right"
                       if len(layers) > 6 else "center")
    ax.set_ylabel("fraction on eigenvalue 0")
    ax.set_ylim(0, max(1e-3, float(np.nanmax([
        s.homogeneous().fraction.max() for s in specs] + [white.max()]))) * 1.15)
    ax.grid(True, alpha=0.3)
    ax.legend()
    # Panels: fraction per mode against the eigenvalue, one per layer.
    for i, layer in enumerate(shown):
        a = fig.add_subplot(gs[1 + i // ncol, i % ncol])
        for tab, sty, label in zip(tabs, styles, labels, strict=False):
            g = tab[tab.layer == layer]
            a.plot(g.eigenvalue, g.fraction / g.multiplicity, ms=3, label=label, **sty)
        g = tabs[0][tabs[0].layer == layer]
        K = int(g.multiplicity.sum())
        a.axhline(1.0 / K, color="k", ls=":", lw=1)
        a.set_title(f"{layer}  ({g.kernel.iloc[0]})")
        a.grid(True, alpha=0.3)
        if i % ncol == 0:
            a.set_ylabel("fraction per mode")
        if i // ncol == nrow - 1:
            a.set_xlabel("Laplacian eigenvalue")
    if len(layers) > len(shown):
        fig.text(0.99, 0.01, f"first {len(shown)} of {len(layers)} layers shown", ha="right",
                 fontsize=7)
    if title is None:
        title = _title(specs[0].config, "filter spectra (grid-Laplacian eigenbasis)")
    fig.suptitle(title)
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig


_QUANTITIES = {"D": "D  (diffeo)", "G": "G  (noise)", "R": "R = D / G"}


@style.styled()
def plot_pooling(report, init=None, *, title: str | None = None,
                 path: str | Path | None = None):
    """D, G, R against depth for the original net, its shuffled copies (geometric mean, band
    from the smallest to the largest copy) and the channel-mean view, with the initialized net
    dotted when given; the bottom panel stacks the per-layer spatial and channel fractions.

    Args:
        report: a :class:`~diffeosense.pooling.PoolingReport`.
        init: the report of the same net at initialization (its original curve is drawn).
        path: also save the figure there (atomic).
    """
    t = report.to_frame().sort_values("depth")
    x = t.depth.to_numpy()
    K = int(report.config.get("n_shuffles", 0))
    fig = Figure(figsize=(min(max(style.TWO_COLUMNS, 0.2 * len(t) + 2.0), 30.0), 8.0),
                 layout="constrained")
    axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1, 1, 0.8]})
    cm = report.sensitivity[(report.sensitivity.variant == "original")
                            & (report.sensitivity.view == "channel-mean")].set_index("layer")
    for ax, q in zip(axes[:3], ("D", "G", "R"), strict=True):
        y = t[q].to_numpy(dtype=float)
        ok = np.isfinite(y) & (y > 0)
        ax.plot(x[ok], y[ok], "o-", color=style.colour(0), ms=3, label="original")
        if K:
            m = t[f"{q}_shuffled"].to_numpy(dtype=float)
            lo = t[f"{q}_shuffled_min"].to_numpy(dtype=float)
            hi = t[f"{q}_shuffled_max"].to_numpy(dtype=float)
            okm = np.isfinite(m) & (m > 0)
            ax.plot(x[okm], m[okm], "s-", color=style.colour(1), ms=3,
                    label=f"channel-shuffled (geometric mean of {K})")
            ax.fill_between(x[okm], lo[okm], hi[okm], color=style.colour(1), alpha=0.2, lw=0,
                            label="shuffled copies: min to max")
        ycm = np.array([cm[q].get(n, np.nan) for n in t.layer], dtype=float)
        okc = np.isfinite(ycm) & (ycm > 0)
        if okc.any():
            ax.plot(x[okc], ycm[okc], "^--", color=style.colour(2), ms=3, lw=1.0,
                    label="original, channel-mean view")
        if init is not None:
            ti = init.to_frame().set_index("layer")
            yi = np.array([ti[q].get(n, np.nan) for n in t.layer], dtype=float)
            oki = np.isfinite(yi) & (yi > 0)
            ax.plot(x[oki], yi[oki], ":", color=style.GREY, marker=".",
                    label="initialization, original")
        ax.set_yscale("log")
        ax.set_ylabel(_QUANTITIES[q])
        ax.grid(True, which="major", alpha=0.3)
        if q == "R":
            ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    leg = axes[0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False)
    leg._diffeosense_outside = True  # above the axes: covers no data
    ax = axes[3]
    ch = t.channel_fraction.to_numpy(dtype=float)
    sp = t.spatial_fraction.to_numpy(dtype=float)
    S, S2 = t.stability.to_numpy(dtype=float), t.stability_shuffled.to_numpy(dtype=float)
    # As in the table: differences of ln D below 1e-9 are rounding.
    none = np.nan_to_num(np.maximum(S - S2, 0) + np.maximum(S2, 0)) <= 1e-9
    sp, ch = np.where(none, 0.0, np.nan_to_num(sp)), np.where(none, 0.0, np.nan_to_num(ch))
    ax.bar(x, sp, color=style.colour(0), alpha=0.75, label="spatial (survives shuffling)")
    ax.bar(x, ch, bottom=sp, color=style.colour(1), alpha=0.75,
           label="channel (lost to shuffling)")
    if none.any() and K:
        ax.bar(x[none], np.ones(none.sum()), color="none", edgecolor="0.6", hatch="//", lw=0,
               label="no stability gained over the input")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of stability")
    leg = ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False)
    leg._diffeosense_outside = True
    ax.set_xticks(x)
    ax.set_xticklabels(t.layer, rotation=90, fontsize=7 if len(t) <= 30 else 5)
    ax.set_xlabel("layer (forward order)")
    ax.set_xlim(x.min() - 0.5, x.max() + 0.5)
    if title is None:
        n = int(report.config.get("measure", {}).get("n_measured", 0))
        title = _title(report.config, f"{n} probes, {K} shuffled copies" if n else "")
    fig.suptitle(title)
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig
