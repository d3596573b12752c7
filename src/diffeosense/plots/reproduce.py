"""Figures of ``diffeosense reproduce``: the paper's figures redrawn from this run's tables.

Matplotlib's object-oriented API only (no pyplot); every figure is saved as PNG, SVG and PDF with
:func:`diffeosense.plots._save.save_figure`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..models.names import display_name
from . import style
from ._save import save_figure

__all__ = ["plot_noisy_scatter", "plot_noisy_correlations", "plot_layerwise", "plot_spectra",
           "plot_tracking", "save_png_svg"]

_QUANTITIES = (("D", "$D_f$"), ("G", "$G_f$"), ("R", "$R_f$"))


def save_png_svg(fig, stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.png`` with its ``.svg`` and ``.pdf`` twins (atomic); returns the PNG's
    and the SVG's paths."""
    stem = Path(stem)
    return save_figure(fig, stem.with_suffix(".png")), stem.with_suffix(".svg")


def _figure(ncols: int, columns: float = 2, height: float = 2.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=style.figsize(columns, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _names(models) -> dict[str, str]:
    """The tables' model names -> their short display names (old long names too)."""
    return {m: display_name(m) for m in models}


@style.styled()
def plot_noisy_scatter(table, title: str | None = None):
    """Test error against D, G and R at the output, one point per (net, training noise).

    table: one row per run with columns ``model, noise, test_error, D, G, R``. Colours are the
    training noise levels, markers the architectures (one per family); log-log axes (the
    correlations are of logarithms); the nets' legend sits under the panels. Returns the
    matplotlib ``Figure``.
    """
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    fig, axes = _figure(3, height=2.5)
    noises = sorted(table["noise"].unique())
    models = list(dict.fromkeys(table["model"]))
    names = _names(models)
    marks = style.markers([names[m] for m in models])
    cmap = mpl.colormaps["viridis"]
    for ax, (q, label) in zip(axes, _QUANTITIES, strict=True):
        for i, s in enumerate(noises):
            colour = cmap(i / max(len(noises) - 1, 1))
            for m in models:
                sel = table[(table["noise"] == s) & (table["model"] == m)]
                if sel.empty:
                    continue
                ax.scatter(sel[q], sel["test_error"], color=colour, marker=marks[names[m]],
                           s=22, edgecolor="k", linewidth=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{label} at the output (noisy probes)")
        ax.grid(alpha=0.3, which="major")
    axes[0].set_ylabel("test error $\\epsilon$")
    handles = [Line2D([], [], ls="", marker=marks[names[m]], color="0.6", mec="k",
                      mew=0.4, label=names[m]) for m in models]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(models), 5),
               title="net (marker)", frameon=False)
    norm = mpl.colors.Normalize(0, max(len(noises) - 1, 1))
    cb = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[-1],
                      ticks=range(len(noises)))
    cb.ax.set_yticklabels([f"{s:g}" for s in noises])
    cb.set_label("training noise $s$")
    if title:
        fig.suptitle(title)
    return style.finalize(fig)


@style.styled()
def plot_noisy_correlations(corr, title: str | None = None):
    """rho(eps, X) for X = D, G, R against the training noise level (the paper's Fig. 1, right).

    corr: columns ``noise, X, rho, n_nets`` (and, when present, an interval ``rho_lo,
    rho_hi``: drawn as error bars). The noise levels are placed at equal spacing and labelled
    (0 has no place on a log axis). Returns the matplotlib ``Figure``.
    """
    fig, axes = _figure(1, columns=1, height=2.6)
    ax = axes[0]
    noises = sorted(corr["noise"].unique())
    pos = {s: i for i, s in enumerate(noises)}
    for i, (q, label) in enumerate(_QUANTITIES):
        sel = corr[corr["X"] == q].sort_values("noise")
        ys = [v if not math.isnan(v) else float("nan") for v in sel["rho"]]
        xs = [pos[s] for s in sel["noise"]]
        kw = dict(color=style.colour(i), marker="os^"[i],
                  label=f"$\\rho(\\epsilon, {label[1:-1]})$")
        if {"rho_lo", "rho_hi"} <= set(sel.columns):
            lo = [max(y - a, 0) for y, a in zip(ys, sel["rho_lo"], strict=True)]
            hi = [max(b - y, 0) for y, b in zip(ys, sel["rho_hi"], strict=True)]
            ax.errorbar(xs, ys, yerr=[lo, hi], capsize=2, **kw)
        else:
            ax.plot(xs, ys, "-", **kw)
    ax.axhline(0, color="k", lw=0.7)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(range(len(noises)), [f"{s:g}" for s in noises])
    ax.set_xlabel("training noise $s$ (L2 norm)")
    ax.set_ylabel("correlation of the logarithms")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return style.finalize(fig)


@style.styled()
def plot_layerwise(table, title: str | None = None):
    """D_k, G_k, R_k against depth (one row of panels per net): init and trained, original
    (solid) and channel-shuffled (dashed, geometric mean over the copies), log scale; one
    legend under the panels.

    table: columns ``model, stage, depth, D, D_shuffled, G, G_shuffled, R, R_shuffled``.
    """
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(table["model"]))
    names = _names(models)
    fig = Figure(figsize=style.figsize(2, 2.0 * len(models) + 0.7), layout="constrained")
    axes = fig.subplots(len(models), 3, squeeze=False)
    for r, m in enumerate(models):
        for c, (q, label) in enumerate(_QUANTITIES):
            ax = axes[r][c]
            for stage in ("init", "trained"):
                t = table[(table["model"] == m) & (table["stage"] == stage)].sort_values("depth")
                colour = style.stage_colour(stage)
                ax.plot(t["depth"], t[q], "-", color=colour, label=f"{stage}")
                ax.plot(t["depth"], t[f"{q}_shuffled"], "--", color=colour,
                        label=f"{stage}, channels shuffled")
            ax.set_yscale("log")
            style.integer_axis(ax.xaxis)
            ax.set_xlabel("layer depth k")
            ax.set_ylabel(f"{label[:-1]}k$".replace("_f", "_"))
            ax.set_title(names[m])
            ax.grid(alpha=0.3, which="major")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, frameon=False)
    if title:
        fig.suptitle(title)
    return style.finalize(fig)


@style.styled()
def plot_tracking(track, title: str | None = None):
    """D, G, R at the output against the epoch (top row) and the training error (bottom
    row), one column per quantity, one colour per net, one line per training seed; the
    x axis is ``epoch + 1`` on a log scale (epoch 0, the initialization, at 1).

    track: columns ``model, seed, epoch, D, G, R, train_error``
    (:func:`diffeosense.experiments.figures.layerwise.tracking_table`).
    """
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(track["model"]))
    names = _names(models)
    colours = [style.colour(i) for i in range(len(models))]
    fig = Figure(figsize=style.figsize(2, 4.0), layout="constrained")
    axes = fig.subplots(2, 3, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for c, (q, label) in enumerate(_QUANTITIES):
        top, bottom = axes[0][c], axes[1][c]
        for m, colour in zip(models, colours, strict=True):
            for k, (_, t) in enumerate(track[track["model"] == m].groupby("seed")):
                t = t.sort_values("epoch")
                lab = names[m] if k == 0 else None
                top.plot(t["epoch"] + 1, t[q], "o-", ms=3, color=colour, label=lab, alpha=0.8)
                bottom.plot(t["epoch"] + 1, t["train_error"], "-", color=colour, alpha=0.8)
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_ylabel(label.replace("_f", "_{out}"))
        top.grid(alpha=0.3, which="major")
        bottom.set_ylabel("training error")
        bottom.set_xlabel("epoch + 1")
        bottom.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(models)),
               frameon=False)
    if title:
        fig.suptitle(title)
    return style.finalize(fig)


@style.styled()
def plot_spectra(homogeneous, title: str | None = None):
    """The homogeneous (lambda = 0) share of the filters of every conv layer, at init and
    trained, beside the value of a white filter (1/K); one panel per net, one legend under
    them.

    homogeneous: columns ``model, stage, layer, fraction, white``.
    """
    models = list(dict.fromkeys(homogeneous["model"]))
    names = _names(models)
    fig, axes = _figure(len(models), columns=min(2, len(models)), height=2.4)
    for ax, m in zip(axes, models, strict=True):
        h = homogeneous[homogeneous["model"] == m]
        for stage in ("init", "trained"):
            t = h[h["stage"] == stage]
            ax.plot(range(1, len(t) + 1), t["fraction"], "o-", color=style.stage_colour(stage),
                    label=stage)
        t = h[h["stage"] == "init"]
        ax.plot(range(1, len(t) + 1), t["white"], ":", color="k", label="white filter (1/K)")
        style.integer_axis(ax.xaxis)
        ax.set_xlabel("conv layer")
        ax.set_title(names[m])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("homogeneous share of the filter power")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    if title:
        fig.suptitle(title)
    return style.finalize(fig)
