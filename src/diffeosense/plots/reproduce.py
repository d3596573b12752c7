"""Figures of ``diffeosense reproduce``: the paper's figures redrawn from this run's tables.

Matplotlib's object-oriented API only (no pyplot); every figure is saved as PNG and SVG with
:func:`diffeosense.plots._save.save_figure`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ._save import save_figure

__all__ = ["plot_noisy_scatter", "plot_noisy_correlations", "plot_layerwise", "plot_spectra",
           "save_png_svg"]

_QUANTITIES = (("D", "$D_f$"), ("G", "$G_f$"), ("R", "$R_f$"))


def save_png_svg(fig, stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` (atomic); returns both paths."""
    stem = Path(stem)
    return (save_figure(fig, stem.with_suffix(".png")), save_figure(fig, stem.with_suffix(".svg")))


def _figure(ncols: int, width: float = 4.2, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def plot_noisy_scatter(table, title: str | None = None):
    """Test error against D, G and R at the output, one point per (net, training noise).

    table: one row per run with columns ``model, noise, test_error, D, G, R``. Colours are the
    training noise levels, markers the architectures; log-log axes (the correlations are of
    logarithms). Returns the matplotlib ``Figure``.
    """
    import matplotlib as mpl

    fig, axes = _figure(3)
    noises = sorted(table["noise"].unique())
    models = list(dict.fromkeys(table["model"]))
    cmap = mpl.colormaps["viridis"]
    markers = "osD^v<>phX*P8"
    for ax, (q, label) in zip(axes, _QUANTITIES, strict=True):
        for i, s in enumerate(noises):
            colour = cmap(i / max(len(noises) - 1, 1))
            for j, m in enumerate(models):
                sel = table[(table["noise"] == s) & (table["model"] == m)]
                if sel.empty:
                    continue
                ax.scatter(sel[q], sel["test_error"], color=colour,
                           marker=markers[j % len(markers)], s=36, edgecolor="k", linewidth=0.4,
                           label=m if i == 0 else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{label} at the output (noisy probes)")
        ax.set_ylabel("test error $\\epsilon$")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, title="net", title_fontsize=7)
    norm = mpl.colors.Normalize(0, max(len(noises) - 1, 1))
    cb = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[-1],
                      ticks=range(len(noises)))
    cb.ax.set_yticklabels([f"{s:g}" for s in noises])
    cb.set_label("training noise $s$")
    if title:
        fig.suptitle(title)
    return fig


def plot_noisy_correlations(corr, title: str | None = None):
    """rho(eps, X) for X = D, G, R against the training noise level (the paper's Fig. 1, right).

    corr: columns ``noise, X, rho, n_nets``. The noise levels are placed at equal spacing and
    labelled (0 has no place on a log axis). Returns the matplotlib ``Figure``.
    """
    fig, axes = _figure(1, width=5.2)
    ax = axes[0]
    noises = sorted(corr["noise"].unique())
    pos = {s: i for i, s in enumerate(noises)}
    colours = {"D": "tab:blue", "G": "tab:orange", "R": "tab:green"}
    for q, label in _QUANTITIES:
        sel = corr[corr["X"] == q].sort_values("noise")
        ys = [v if not math.isnan(v) else float("nan") for v in sel["rho"]]
        ax.plot([pos[s] for s in sel["noise"]], ys, "o-", color=colours[q],
                label=f"$\\rho(\\epsilon, {label[1:-1]})$")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(range(len(noises)), [f"{s:g}" for s in noises])
    ax.set_xlabel("training noise $s$ (L2 norm)")
    ax.set_ylabel("correlation coefficient of the logarithms")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_layerwise(table, title: str | None = None):
    """D_k, G_k, R_k against depth (one row of panels per net): init and trained, original
    (solid) and channel-shuffled (dashed, geometric mean over the copies), log scale.

    table: columns ``model, stage, depth, D, D_shuffled, G, G_shuffled, R, R_shuffled``.
    """
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(table["model"]))
    fig = Figure(figsize=(12, 3.2 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), 3, squeeze=False)
    colours = {"init": "tab:gray", "trained": "tab:blue"}
    for r, m in enumerate(models):
        for c, (q, label) in enumerate(_QUANTITIES):
            ax = axes[r][c]
            for stage in ("init", "trained"):
                t = table[(table["model"] == m) & (table["stage"] == stage)].sort_values("depth")
                ax.plot(t["depth"], t[q], "-", color=colours[stage], label=f"{stage}")
                ax.plot(t["depth"], t[f"{q}_shuffled"], "--", color=colours[stage],
                        label=f"{stage}, channels shuffled")
            ax.set_yscale("log")
            ax.set_xlabel("layer depth k")
            ax.set_ylabel(f"{label[:-1]}k$".replace("_f", "_"))
            ax.set_title(m, fontsize=9)
            ax.grid(alpha=0.3, which="both")
        axes[r][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_spectra(homogeneous, title: str | None = None):
    """The homogeneous (lambda = 0) share of the filters of every conv layer, at init and
    trained, beside the value of a white filter (1/K); one panel per net.

    homogeneous: columns ``model, stage, layer, fraction, white``.
    """
    models = list(dict.fromkeys(homogeneous["model"]))
    fig, axes = _figure(len(models))
    for ax, m in zip(axes, models, strict=True):
        h = homogeneous[homogeneous["model"] == m]
        for stage, colour in (("init", "tab:gray"), ("trained", "tab:blue")):
            t = h[h["stage"] == stage]
            ax.plot(range(1, len(t) + 1), t["fraction"], "o-", color=colour, label=stage)
        t = h[h["stage"] == "init"]
        ax.plot(range(1, len(t) + 1), t["white"], ":", color="k", label="white filter (1/K)")
        ax.set_xlabel("conv layer")
        ax.set_ylabel("homogeneous share of the filter power")
        ax.set_title(m, fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
