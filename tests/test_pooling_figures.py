"""Figs. 3 and 4 (layer-wise, filter spectra): tables and claims from the pooling engine, on
runs shared with the noisy-training grid."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from diffeosense._io import read_table
from diffeosense.experiments.figures import filter_spectra as fs
from diffeosense.experiments.figures import layerwise as pf
from diffeosense.experiments.figures import noisy_training as nt


def test_presets_train_the_clean_runs_of_the_noisy_grid():
    for scale in ("quick", "paper"):  # medium: tests/test_reproduce_medium.py
        clean = {rc.hash() for rc in nt.run_configs(nt.PRESETS[scale])
                 if rc.train.data.noise == 0}
        mine = {rc.hash() for rc in pf.run_configs(pf.PRESETS[scale])}
        assert mine and mine <= clean  # shared hash folders: trained once
        spectra = {rc.hash() for rc in nt.run_configs(fs.PRESETS[scale].training)}
        assert spectra == mine  # Fig. 4 reads the checkpoints of Fig. 3
    assert [n.model for n in pf.PRESETS["paper"].training.nets] == \
        ["vgg11", "vgg11bn", "alexnet", "lenet"]
    with pytest.raises(ValueError, match="clean"):
        pf.LayerwiseConfig(training=nt.PRESETS["quick"])
    with pytest.raises(ValueError, match="clean"):
        fs.FilterSpectraConfig(training=nt.PRESETS["quick"])


def _long(model, stage, D, G, R, Ds, cf):
    return [{"model": model, "stage": stage, "layer": n, "depth": k, "kind": "x", "D": d,
             "D_shuffled": s, "G": g, "G_shuffled": g, "R": r, "R_shuffled": r,
             "channel_fraction": c}
            for k, (n, d, g, r, s, c) in enumerate(
                zip(["input", "1", "output"], D, G, R, Ds, cf, strict=True))]


def test_layerwise_claims_follow_the_numbers():
    # Three nets that train as the paper says, by different amounts: shown (interval over
    # the nets on the paper's side, R down by more than a decade, 0 < channel share < 1).
    rows = []
    for m, f in (("a", 1.0), ("b", 1.5), ("c", 2.0)):
        rows += (_long(m, "init", [0.2, 0.2, 0.2], [1, 1, 1], [0.2, 0.2, 0.2], [.2, .2, .2],
                       [0, 0, 0])
                 + _long(m, "trained", [0.2, 0.05 / f, 0.01 / f], [1, 2 * f, 4 * f],
                         [0.2, 0.025 / f, 0.0025 / f**2], [.2, .1, .05], [0, .3, .4 / f]))
    claims = pf.layerwise_claims(pd.DataFrame(rows))
    assert [c["verdict"] for c in claims] == ["shown"] * 4
    assert "a: D_out/D_in init 1, trained 0.05" in claims[0]["evidence"]
    assert "channel share 0.40" in claims[3]["evidence"]
    assert "bootstrap over 3 nets" in claims[2]["evidence"]
    # Nets whose D rises, G falls and R rises with training: contradicted. Shuffling loses
    # all of the stability (share 1 in every net): the interval [1, 1] does not exclude 1,
    # so "0 < share < 1" is not shown (nor contradicted: share 1 is the boundary).
    rows = []
    for m, f in (("a", 1.0), ("b", 1.5), ("c", 2.0)):
        rows += (_long(m, "init", [0.2, 0.2, 0.1], [1, 1, 1], [.2, .2, .1], [.2, .2, .1],
                       [0] * 3)
                 + _long(m, "trained", [0.2, 0.2, 0.2 * f], [1, 1, 0.5 / f], [.2, .2, .4 * f],
                         [.2, .2, .2], [0, 1, 1]))
    assert [c["verdict"] for c in pf.layerwise_claims(pd.DataFrame(rows))] == \
        ["contradicted", "contradicted", "contradicted", "not shown"]
    # One net: no interval, no verdict.
    one = pd.DataFrame([r for r in rows if r["model"] == "a"])
    assert {c["verdict"] for c in pf.layerwise_claims(one)} == {None}


def test_reproduce_layerwise_and_spectra_share_one_training(tmp_path, monkeypatch):
    from diffeosense.experiments.reproduce import ReproduceOptions, reproduce

    training = nt.NoisyTrainingConfig(
        nets=[nt.NetSpec("simplecnn", {"depth": 2, "width": 4, "batch_norm": True}, lr=0.05)],
        noises=[0.0],
        P=200, epochs=1, n_probes=20)
    monkeypatch.setitem(pf.PRESETS, "quick",
                        pf.LayerwiseConfig(training=training, n_probes=24, n_shuffles=1))
    monkeypatch.setitem(fs.PRESETS, "quick", fs.FilterSpectraConfig(training=training))
    path = reproduce(["layerwise", "filter-spectra"], "quick", tmp_path, "cmd",
                     ReproduceOptions(workers=1, progress=False))
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and json.loads((runs[0] / "attempts.json").read_text()) == \
        {"attempts": 1}
    lw, meta = read_table(tmp_path / "layerwise" / "layerwise.csv")
    assert (meta["figure"], meta["config"]["n_shuffles"]) == ("layerwise", 1)
    assert set(lw["stage"]) == {"init", "trained"} and (lw[["D", "G", "R"]] > 0).all().all()
    assert lw["layer"].iloc[0] == "input" and lw["layer"].iloc[-1] == "output"
    homo = read_table(tmp_path / "filter_spectra" / "filter_spectra_homogeneous.csv")[0]
    assert len(homo) == 4 and homo["white"].eq(1 / 9).all()  # 2 convs x 2 stages, 3 x 3
    spectra = read_table(tmp_path / "filter_spectra" / "filter_spectra.csv")[0]
    sums = spectra.groupby(["stage", "layer"])["fraction"].sum()
    assert sums.sub(1).abs().max() < 1e-9
    for f in ("layerwise/layerwise.png", "layerwise/layerwise.svg",
              "filter_spectra/filter_spectra.png", "filter_spectra/filter_spectra.svg"):
        assert (tmp_path / f).stat().st_size > 1000
    root = ET.fromstring(path.read_text().split("\n", 1)[1])
    assert [f.get("id") for f in root.iter("figure")] == ["fig-layerwise", "fig-filter-spectra"]
    # Untrained BatchNorm nets are measured with per-stream batch statistics (the authors'),
    # trained ones as given.
    (net,) = [p for p in (tmp_path / "layerwise").iterdir() if p.is_dir()]
    for stage, bn in (("init", "batch"), ("trained", "eval")):
        (meta,) = net.glob(f"{stage}-*_pooling.meta.json")
        assert json.loads(meta.read_text())["config"]["measure"]["batchnorm"] == bn


def test_when_r_falls_early_late_or_not_at_all():
    nan = float("nan")

    def run(model, seed, R, err):
        return pd.DataFrame({"model": model, "seed": seed, "epoch": [0, 1, 2, 4, 8],
                             "R": R, "train_error": [nan, *err]})

    track = pd.concat([
        # R falls by 100x, half of it (x10) by epoch 1; the training error is 0 from epoch 4.
        run("early", 0, [1.0, 0.1, 0.05, 0.02, 0.01], [0.3, 0.1, 0.0, 0.0]),
        # Half of the fall only at epoch 8, after the training error reached zero at 2.
        run("late", 0, [1.0, 1.0, 0.9, 0.5, 0.01], [0.2, 0.005, 0.0, 0.0]),
        # R rises.
        run("flat", 0, [1.0, 1.1, 1.2, 1.3, 1.5], [0.3, 0.2, 0.1, 0.05]),
        # Falls, the training error never reaches zero: early (before it would).
        run("never", 1, [2.0, 1.0, 0.5, 0.4, 0.2], [0.5, 0.4, 0.3, 0.2])])
    w = pf.when_table(track).set_index("model")
    assert w["when"].to_dict() == {"early": "early", "late": "late", "flat": "not at all",
                                   "never": "early"}
    assert w.loc["early", "epoch_half"] == 1 and w.loc["early", "epoch_zero"] == 4
    assert w.loc["late", "epoch_half"] == 8 and w.loc["late", "epoch_zero"] == 2
    assert w.loc["early", "fall"] == pytest.approx(100)
    assert math.isnan(w.loc["never", "epoch_zero"]) and w.loc["never", "min_train_error"] == 0.2
    text = pf.when_summary(w.reset_index())
    assert "never: R_out x0.1 over 8 epochs, falls early in 1 of 1 seed(s); the training " \
           "error never reached zero (lowest 20.0%)" in text
