"""Every figure of the library, drawn on a small synthetic result, read as a reader would: each
log axis shows at least three labelled ticks in plain numbers, each depth / epoch / layer axis
only integer ticks, no legend covers a data point, the style's colours and names are used,
and every saved PNG has its SVG and PDF."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from diffeosense.models.names import display_name
from diffeosense.plots import style

PLAIN = re.compile(r"^\d+(\.\d+)?(e[-+]?\d+)?$")
INTEGER_AXIS = re.compile(r"^(conv )?(layer|depth|epoch)\b", re.I)  # x = a layer, epoch


# ------------------------------------------------------------------ the checks
def _labelled(axis):
    return [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]


def _points(ax):
    """Lines' vertices and scatter offsets of ``ax``, display coordinates (what a reader sees
    as data: reference lines in axes coordinates aside)."""
    out = []
    for line in ax.lines:
        if line.get_visible() and line.get_transform() == ax.transData and len(line.get_xydata()):
            out.append(line.get_transform().transform(np.asarray(line.get_xydata(), float)))
    for c in ax.collections:
        if hasattr(c, "get_offsets") and type(c).__name__ == "PathCollection":
            off = np.asarray(c.get_offsets(), float)
            if len(off):
                out.append(c.get_offset_transform().transform(off))
    p = np.concatenate(out) if out else np.zeros((0, 2))
    return p[np.isfinite(p).all(axis=1)]


def check_figure(fig, min_log_ticks: int = 3):
    """The three properties of the issue, on the live matplotlib objects."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    n_log = n_int = 0
    for ax in fig.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if axis.get_scale() == "log":
                n_log += 1
                labels = _labelled(axis)
                assert len(labels) >= min_log_ticks, (ax.get_title(), label, labels)
                bad = [t for t in labels if not PLAIN.match(t.replace("\u2212", "-"))]
                assert not bad, (ax.get_title(), label, bad)
            if INTEGER_AXIS.search(label) and "relative" not in label:
                n_int += 1
                lo, hi = sorted(axis.get_view_interval())
                locs = [v for v in axis.get_majorticklocs() if lo - 1e-9 <= v <= hi + 1e-9]
                assert locs and all(float(v).is_integer() for v in locs), (label, locs)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    legends += list(fig.legends)
    points = [_points(ax) for ax in fig.axes]
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for p in points:
            inside = ((p[:, 0] > box.x0) & (p[:, 0] < box.x1) & (p[:, 1] > box.y0)
                      & (p[:, 1] < box.y1))
            assert not inside.any(), ([t.get_text() for t in leg.get_texts()], p[inside])
    return n_log, n_int, len(legends)


# ------------------------------------------------------------------ the style itself
@pytest.mark.parametrize("lo, hi", [(0.09, 0.16), (0.9, 1.1), (0.02, 0.2), (0.05, 3.0),
                                    (1e-3, 10.0), (1e-8, 1e4), (3.0, 4.0), (0.0101, 0.0102)])
def test_log_ticks_are_plain_and_at_least_three_whatever_the_span(lo, hi):
    from matplotlib.figure import Figure

    with style.styled():
        fig = Figure(figsize=style.figsize(1))
        ax = fig.subplots()
        ax.plot([1, 2, 3], [lo, math.sqrt(lo * hi), hi], "o-")
        ax.set_yscale("log")
        style.finalize(fig)
    n_log, _, _ = check_figure(fig)
    assert n_log == 1
    assert len(_labelled(ax.yaxis)) <= 12


def test_a_legend_over_the_data_moves_off_it():
    from matplotlib.figure import Figure

    with style.styled():
        fig = Figure(figsize=style.figsize(1))
        ax = fig.subplots()
        x = np.linspace(0, 1, 30)
        for i in range(4):  # data in every corner
            ax.plot(x, (x - 0.5) ** 2 * (i + 1), "o", label=f"curve {i}")
        ax.legend(loc="upper right")
        style.finalize(fig)
    check_figure(fig)


def test_markers_and_names_are_the_same_everywhere():
    assert style.marker("vgg11bn") == style.marker("vgg16bn") == style.marker("vgg11")
    assert style.marker("simplecnn-3x32-bn") == style.marker("simplecnn")
    assert len({style.marker(m) for m in ("fc2", "lenet", "simplecnn", "vgg11", "resnet18")}) == 5
    assert display_name("simplecnn", {"depth": 3, "width": 32, "batch_norm": True}) == \
        display_name("simplecnn(batch_norm=True,depth=3,width=32)") == "simplecnn-3x32-bn"
    from diffeosense.data import DataConfig
    from diffeosense.experiments.figures.noisy_training import display_name as run_name
    from diffeosense.train import TrainConfig

    t = TrainConfig(model="simplecnn", model_kwargs={"depth": 3, "width": 32,
                                                      "batch_norm": True}, data=DataConfig())
    assert run_name(t) == "simplecnn-3x32-bn"


def test_png_comes_with_svg_and_pdf(tmp_path):
    from matplotlib.figure import Figure

    from diffeosense.plots._save import save_figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([1, 2])
    assert save_figure(fig, tmp_path / "a.png") == tmp_path / "a.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.png", "a.svg"]
    assert (tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    assert b"<svg" in (tmp_path / "a.svg").read_bytes()
    save_figure(fig, tmp_path / "b.svg")  # any other suffix: that file only
    assert not (tmp_path / "b.png").exists() and not (tmp_path / "b.pdf").exists()


# ------------------------------------------------------------------ every figure function
def _sensitivity_table(n, scale=1.0):
    d = np.arange(n)
    return pd.DataFrame({
        "layer": [f"layer{i}" for i in d], "depth": d, "kind": "conv", "view": "full",
        "channel": -1, "D": scale * (0.16 - 0.07 * d / max(n - 1, 1)), "G": 1.0 + 0.1 * d,
        "R": scale * 0.5**d, "D_se": 0.002, "G_se": 0.01, "R_se": 0.001, "n_probes": 50})


def test_plot_sensitivity():
    from diffeosense.plots.sensitivity import plot_sensitivity
    from diffeosense.sensitivity import SensitivityResult

    fig = plot_sensitivity([SensitivityResult(_sensitivity_table(12)),
                            SensitivityResult(_sensitivity_table(12, 0.3))], ["init", "trained"])
    n_log, n_int, n_leg = check_figure(fig)
    assert n_log == 3 and n_int >= 1 and n_leg == 1


def _track():
    from diffeosense.tracking import TRACK_COLUMNS

    rows = [dict(epoch=e, layer=n, depth=d, kind=n, view="full", D=0.1 / (1 + 0.1 * e * d),
                 G=0.5 + 0.2 * e, R=0.1 / (1 + 0.1 * e * d) / (0.5 + 0.2 * e) * 5, D_se=0.001,
                 G_se=0.01, R_se=0.01, n_probes=50, train_loss=1.0, train_error=0.5 / (1 + e),
                 test_loss=1.0, test_error=0.6 / (1 + e))
            for e in (0, 1, 2, 3) for d, n in enumerate(["input", "conv", "relu", "output"])]
    return pd.DataFrame(rows, columns=TRACK_COLUMNS)


def test_plot_tracking_colour_bars_and_title():
    from diffeosense.plots.tracking import plot_tracking

    fig = plot_tracking(_track(), meta={"model": "simplecnn", "data": {"name": "mnist"},
                                        "model_kwargs": {"depth": 3, "width": 32}})
    check_figure(fig)
    title = fig.get_suptitle()
    assert "simplecnn-3x32" in title and "mnist" in title and "50 probes" in title
    bars = [ax for ax in fig.axes if ax.get_ylabel().endswith("(log scale)")]
    assert len(bars) == 3
    for cb in bars:
        labels = _labelled(cb.yaxis)
        assert len(labels) >= 3 and all(PLAIN.match(t) and float(t) > 0 for t in labels), labels


def test_plot_pooling_and_spectra():
    from diffeosense.plots.pooling import plot_pooling, plot_spectra
    from diffeosense.pooling import filter_spectra, pooling_report

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    shift = lambda t, g: torch.roll(t, 1, dims=-1)  # noqa: E731
    rep = pooling_report(net, x, n_shuffles=2, n_probes=8, perturbation=shift)
    check_figure(plot_pooling(rep, rep))
    check_figure(plot_spectra(rep.spectra, filter_spectra(net)))


def _scale_detection_tables(L=7, strides=(2,)):
    rows, theory = [], []
    for s in strides:
        for st, a in (("init", 0.0), ("trained", 1.0)):
            for view in ("full", "channel-mean"):
                for k in range(1, L + 1):
                    rows.append({"stride": s, "state": st, "view": view,
                                 "layer": f"features.act{k}", "k": k,
                                 "D": 0.8 * math.exp(-0.3 * a * k), "G": 0.6 * math.exp(0.2 * k),
                                 "R": 0.8 * math.exp(-0.5 * a * k) / 0.6, "D_se": 0.02,
                                 "G_se": 0.02, "R_se": 0.02})
        for k in range(1, L):
            theory.append({"stride": s, "k": k, "D": 2.0**-k, "G": 2.0**k, "R": 4.0**-k})
    exps = pd.DataFrame([{"stride": s, "view": v, "state": st, "quantity": q,
                          "law": "power" if s == 1 else "exponential", "slope": -0.3,
                          "stderr": 0.02, "seed_se": 0.03, "predicted": -0.69,
                          "theory_fit": -0.54}
                         for s in strides for v in ("full", "channel-mean")
                         for st in ("init", "trained") for q in "DGR"])
    return pd.DataFrame(rows), pd.DataFrame(theory), exps


def test_plot_scale_detection_names_both_theory_slopes():
    from diffeosense.experiments.scale_detection import preset
    from diffeosense.plots.scale_detection import plot_scale_detection

    cfg = preset("small", strides=(2,), depths=(7,), seeds=(0,))
    agg, theory, exps = _scale_detection_tables()
    fig = plot_scale_detection(cfg, agg, theory, exps)
    n_log, n_int, n_leg = check_figure(fig)
    assert n_int == 6 and n_leg == 6
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("fit on window: -0.54" in t for t in texts), texts
    assert any("asymptotic law: -0.69" in t for t in texts), texts
    assert not any("pred." in t for t in texts)


def test_plot_activation_comparison():
    from diffeosense.experiments.scale_detection import preset
    from diffeosense.plots.scale_detection import plot_activation_comparison

    agg, _, exps = _scale_detection_tables(L=5, strides=(1,))
    results = [SimpleNamespace(config=preset("small", strides=(1,), depths=(5,), seeds=(0,),
                                             activation=a), aggregate=agg, exponents=exps)
               for a in ("relu", "tanh")]
    check_figure(plot_activation_comparison(results))


def test_plot_scale_detection_2d():
    from diffeosense.plots.scale_detection_2d import plot_scale_detection_2d

    models = ["lenet", "vgg11", "vgg11bn", "resnet18"]
    summary = pd.DataFrame({"model": models, "seed": 0, "test_error": [0.05, 0.008, 0.002, 0.0],
                            "D": [0.051, 0.016, 0.042, 0.023], "G": [0.64, 0.73, 30.0, 1.7],
                            "R": [0.08, 0.022, 0.0014, 0.013]})
    sens = pd.DataFrame([{"model": m, "seed": 0, "state": st, "layer": f"relu{k}",
                          "kind": "activation", "depth": k, "D": 1 / k, "G": k, "R": 1 / k**2}
                         for m in models for st in ("init", "trained") for k in (1, 2, 3, 4)])
    check_figure(plot_scale_detection_2d(summary, sens))


def _noisy_runs():
    rng = np.random.default_rng(0)
    models = ["fc2", "fc4", "lenet", "simplecnn(batch_norm=True,depth=3,width=32)", "vgg11bn"]
    rows = []
    for i, m in enumerate(models):
        for s in (0.0, 1.0, 10.0, 30.0):
            rows.append({"model": m, "noise": s, "seed": 0,
                         "test_error": 0.02 * (1 + i % 3) * (1 + s / 30) * rng.uniform(0.8, 1.2),
                         "D": 0.05 + 0.01 * i + 0.001 * s, "G": 0.01 * 10 ** (i / 2),
                         "R": 5.0 / (1 + i) ** 2})
    return pd.DataFrame(rows)


def test_reproduce_figures_use_short_names_and_keep_legends_off_the_data():
    from diffeosense.experiments.figures.noisy_training import correlation_table
    from diffeosense.plots import reproduce as rp

    runs = _noisy_runs()
    fig = rp.plot_noisy_scatter(runs, "mnist, 5 nets x 4 noise levels (quick)")
    check_figure(fig)
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "simplecnn-3x32-bn" in labels and not any("(" in t for t in labels)
    corr = correlation_table(runs)
    check_figure(rp.plot_noisy_correlations(corr, "t"))
    corr = corr.assign(rho_lo=corr.rho - 0.2, rho_hi=np.minimum(corr.rho + 0.2, 1.0))
    check_figure(rp.plot_noisy_correlations(corr, "t"))
    layer = pd.DataFrame([{"model": m, "stage": st, "depth": d, **{
        f"{q}{suf}": (0.5 + d) ** (-1 if q == "D" else 1) * (0.7 if suf else 1.0)
        for q in "DGR" for suf in ("", "_shuffled")}}
        for m in ("lenet", "vgg11bn") for st in ("init", "trained") for d in range(9)])
    fig = rp.plot_layerwise(layer, "t")
    n_log, n_int, _ = check_figure(fig)
    assert n_log == 6 and n_int == 6
    homo = pd.DataFrame([{"model": m, "stage": st, "layer": f"conv{i}", "fraction": 0.1 * i,
                          "white": 1 / 9} for m in ("lenet", "vgg11bn")
                         for st in ("init", "trained") for i in range(1, 5)])
    check_figure(rp.plot_spectra(homo, "t"))


def test_plot_diffeo_grid():
    from diffeosense.plots.diffeo import plot_diffeo_grid, temperature_ladder

    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    check_figure(plot_diffeo_grid(img, [2], [temperature_ladder(16, 2, inside=2)]))
