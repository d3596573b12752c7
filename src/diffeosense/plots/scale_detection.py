"""Figure of the scale-detection experiment: D_k, G_k, R_k against depth, with the theory.

One row per stride (s = 1, s = F) and view (the full representation, and the channel-mean
view when the table has it), one column per quantity (D, G, R). Each panel shows the
geometric mean over seeds (error bars: one standard error over seeds, on the log scale) of the
activation layers ``k = 1..L``, at initialization (grey) and after training (red), and the
exact curve of the idealized pure-pooling net (:func:`diffeosense.theory.pooling_sensitivities`,
dashed). Axes: log-log for s = 1 (the predicted laws are powers of k), log-linear for s = F
(powers of F^k), so every predicted law is a straight line.

Normalization of the theory: the idealized net has one channel and homogeneous filters, so its
prefactors differ from a trained net's; only the *slopes* are predictions. The theory curve is
therefore multiplied by the constant that makes it pass through the trained curve at the first
fitted layer ``k = fit_k_min`` ("anchored"); the fit window is shaded. Two slopes of the theory
are given, named apart: the slope of the exact idealized curve fitted on the fit window (finite
depth: ``theory_fit`` of the exponents table) and the asymptotic law (``predicted``, drawn as a
dotted straight line from the same anchor).

>>> import pandas as pd
>>> from diffeosense.experiments.scale_detection import preset
>>> cfg = preset("small", strides=(2,), depths=(2,), seeds=(0,))
>>> rows = [{"stride": 2, "state": st, "layer": f"features.act{k}", "k": k, "D": 1.0 / k,
...          "G": 1.0 * k, "R": 1.0 / k**2, "D_se": 0.0, "G_se": 0.0, "R_se": 0.0}
...         for st in ("init", "trained") for k in (1, 2)]
>>> theory = pd.DataFrame({"stride": [2, 2], "k": [1, 2], "D": [1.0, 0.5], "G": [1.0, 2.0],
...                        "R": [1.0, 0.25]})
>>> fig = plot_scale_detection(cfg, pd.DataFrame(rows), theory)
>>> [ax.get_yscale() for ax in fig.axes]
['log', 'log', 'log']
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from . import style
from ._save import save_figure

__all__ = ["plot_scale_detection", "plot_activation_comparison", "save_result_figure"]

_TITLES = {"D": "D_k", "G": "G_k", "R": "R_k"}
_STATES = {"init": (style.GREY, "init"), "trained": (style.PALETTE[1], "trained")}
_THEORY = style.PALETTE[0]


def _activations(df):
    return df[df.layer.astype(str).str.contains(r"(?:^|\.)act\d+$", regex=True)].sort_values("k")


@style.styled()
def plot_scale_detection(cfg, aggregate, theory, exponents=None, path: str | Path | None = None):
    """D_k, G_k, R_k vs depth k, init vs trained, theory anchored at ``k = cfg.fit_k_min``.

    Args:
        cfg: the :class:`~diffeosense.experiments.scale_detection.ScaleDetectionExperiment`.
        aggregate: the run's ``aggregate`` table (columns ``stride, state, layer, k, D, G, R``
            and ``*_se``).
        theory: the run's ``theory`` table (``stride, k, D, G, R``).
        exponents: optional ``exponents`` table: the fitted and predicted slopes of the
            trained nets go in each panel's legend.
        path: also save the figure there (atomic).

    Returns:
        the matplotlib ``Figure`` (``len(strides) x len(views)`` rows x 3 columns).
    """
    views = (["full"] if "view" not in aggregate else
             [v for v in ("full", "channel-mean") if (aggregate.view == v).any()])
    panels = [(i, s, v) for i, s in enumerate(cfg.strides) for v in views]
    fig = Figure(figsize=style.figsize(2, 2.9 * len(panels) + 0.5), layout="constrained")
    axes = fig.subplots(len(panels), 3, squeeze=False)
    k0 = cfg.fit_k_min
    for row, (i_s, s, view) in enumerate(panels):
        agg = aggregate if "view" not in aggregate else aggregate[aggregate.view == view]
        exps = exponents
        if exponents is not None and "view" in exponents:
            exps = exponents[exponents.view == view]
        L = cfg.net_depths[i_s]
        k_hi = min(L, cfg.fit_k_max or L)
        th = theory[theory.stride == s].sort_values("k") if len(theory) else theory
        for col, q in enumerate(("D", "G", "R")):
            ax = axes[row, col]
            trained = None
            for state, (color, label) in _STATES.items():
                df = _activations(agg[(agg.stride == s) & (agg.state == state)])
                if df.empty:
                    continue
                k = df.k.to_numpy(dtype=float)
                y = df[q].to_numpy(dtype=float)
                se = np.nan_to_num(df[f"{q}_se"].to_numpy(dtype=float)) \
                    if f"{q}_se" in df else np.zeros_like(y)
                ok = np.isfinite(y) & (y > 0)
                lower = np.minimum(se[ok], 0.9 * y[ok])
                lab = label
                if exps is not None:
                    lab += _slope_label(exps, s, q, state, predicted=False)
                ax.errorbar(k[ok], y[ok], yerr=[lower, se[ok]], color=color, marker="o", ms=3,
                            capsize=2, label=lab)
                if state == "trained":
                    trained = (k[ok], y[ok])
            if trained is not None and len(th) and k0 in set(th.k) and k0 in set(trained[0]):
                anchor = trained[1][list(trained[0]).index(k0)] / float(th[th.k == k0][q].iloc[0])
                lab = "idealized net"
                e = _row(exps, s, "trained", q) if exps is not None else None
                if e is not None and math.isfinite(e.theory_fit):
                    lab += f", fit on window: {e.theory_fit:+.2f}"
                ax.plot(th.k, th[q] * anchor, color=_THEORY, ls="--", lw=1.1, label=lab)
                if e is not None and math.isfinite(e.predicted):
                    kk = np.linspace(k0, float(np.max(th.k)), 20)
                    y0 = float(th[th.k == k0][q].iloc[0]) * anchor
                    law = getattr(e, "law", "power" if s == 1 else "exponential")
                    yy = y0 * ((kk / k0) ** e.predicted if law == "power"
                               else np.exp(e.predicted * (kk - k0)))
                    ax.plot(kk, yy, color="k", ls=":", lw=1.0,
                            label=f"asymptotic law: {e.predicted:+.2f}")
            ax.axvspan(k0 - 0.1 if s > 1 else k0 * 0.97, k_hi + 0.1 if s > 1 else k_hi * 1.03,
                       color="0.9", zorder=0)
            ax.set_yscale("log")
            if s == 1:
                ax.set_xscale("log")
                ticks = _layer_ticks(L)
                ax.set_xticks(ticks)
                ax.set_xticklabels([str(t) for t in ticks])
                ax.minorticks_off()
            else:
                ax.set_xticks(_layer_ticks(L))
            ax.set_xlabel("layer k")
            ax.set_title(f"{_TITLES[q]}: s = {s}, F = {cfg.filter_size}, {view}")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(loc="best", fontsize=6, handlelength=1.6, borderpad=0.3, labelspacing=0.25)
    fig.suptitle(
        f"scale detection 1D ({getattr(cfg, 'preset', '')} preset): N = {cfg.size}, "
        f"xi = {cfg.xi}, gap = {cfg.gap}, P = {cfg.train_size}, H = {cfg.width}, "
        f"{cfg.activation}, "
        f"{getattr(cfg, 'parametrization', 'standard')}/{getattr(cfg, 'readout', 'standard')}, "
        f"{len(cfg.seeds)} seed(s)\nlegend: fitted slope +- s.e. over seeds; shaded: fit "
        f"window; theory anchored at k = {k0}")
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig


def _row(exponents, s, state, q):
    e = exponents[(exponents.stride == s) & (exponents.state == state)
                  & (exponents.quantity == q)]
    return None if e.empty else next(e.itertuples())


def _layer_ticks(L: int) -> list[int]:
    """Integer layer ticks, at most ~10 of them."""
    step = max(1, math.ceil(L / 10))
    return list(range(1, L + 1, step))


def _slope_label(exponents, s, q, state="trained", predicted: bool = True) -> str:
    e = _row(exponents, s, state, q)
    if e is None or not math.isfinite(e.slope):
        return ""
    err = e.seed_se if math.isfinite(e.seed_se) else e.stderr
    err_s = f" ± {err:.2f}" if math.isfinite(err) else ""
    pred = f" (asymptotic law {e.predicted:+.2f})" if predicted else ""
    return f": {e.slope:+.2f}{err_s}{pred}"


def save_result_figure(result, path: str | Path | None = None) -> Path:
    """Draw a :class:`~diffeosense.experiments.scale_detection.ScaleDetectionResult` into
    ``path`` (default: ``<run folder>/scale_detection.png``)."""
    path = Path(path) if path is not None else result.out_dir / "scale_detection.png"
    plot_scale_detection(result.config, result.aggregate, result.theory, result.exponents,
                         path=path)
    return path


@style.styled()
def plot_activation_comparison(results, view: str = "full", path: str | Path | None = None):
    """D_k, G_k, R_k of runs that differ by their activation (e.g. relu vs tanh), side by side.

    One row per stride, columns D, G, R; one colour per run (its ``config.activation``),
    trained solid, initialization dotted; the legend gives the fitted slope +- s.e. over seeds.
    The paper: odd activations (tanh) keep the noise mean at zero, so G_k does not pile up.

    Args:
        results: :class:`~diffeosense.experiments.scale_detection.ScaleDetectionResult`s with
            the same strides.
        view: ``"full"`` or ``"channel-mean"``.
        path: also save the figure there (atomic).
    """
    cfg0 = results[0].config
    strides = list(cfg0.strides)
    fig = Figure(figsize=style.figsize(2, 2.9 * len(strides) + 0.5), layout="constrained")
    axes = fig.subplots(len(strides), 3, squeeze=False)
    for i, res in enumerate(results):
        color = style.colour(i)
        agg = res.aggregate[res.aggregate.view == view] if "view" in res.aggregate \
            else res.aggregate
        ex = res.exponents[res.exponents.view == view] if "view" in res.exponents \
            else res.exponents
        for row, s in enumerate(strides):
            for col, q in enumerate(("D", "G", "R")):
                ax = axes[row, col]
                for state, ls in (("trained", "-"), ("init", ":")):
                    df = _activations(agg[(agg.stride == s) & (agg.state == state)])
                    lab = f"{res.config.activation} {state}" + _slope_label(ex, s, q, state,
                                                                            predicted=False)
                    ax.plot(df.k, df[q], ls=ls, color=color, marker="o" if ls == "-" else None,
                            ms=4, label=lab)
                ax.set_yscale("log")
                if s == 1:
                    ax.set_xscale("log")
                    ax.minorticks_off()
                L = int(max(agg.k)) if len(agg) else 1
                ax.set_xticks(_layer_ticks(L), [str(t) for t in _layer_ticks(L)])
                ax.set_xlabel("layer k")
                ax.set_title(f"{_TITLES[q]}: s = {s}, {view}")
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=6, borderpad=0.3, labelspacing=0.25)
    fig.suptitle(f"scale detection 1D, {cfg0.preset} preset: activations compared "
                 f"(N = {cfg0.size}, H = {cfg0.width}, {len(cfg0.seeds)} seed(s))\nlegend: "
                 f"fitted slope on k = {cfg0.fit_k_min}..L")
    style.finalize(fig)
    if path is not None:
        save_figure(fig, path)
    return fig
