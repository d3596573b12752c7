"""``diffeosense reproduce``: the figure registry, the scale-detection figure on top of the two
scale-detection experiments, and the command line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from _tables import assert_tampering_refused

from diffeosense._io import read_table
from diffeosense.experiments import reproduce as rp
from diffeosense.experiments import scale_detection as sd1
from diffeosense.experiments import scale_detection_2d as sd2
from diffeosense.experiments.figure import list_figures
from diffeosense.experiments.figures import scale_detection as sdf


def test_registry_and_scales():
    assert list_figures() == ["noisy-training", "layerwise", "filter-spectra",
                              "scale-detection"]  # the paper's order: Figs. 1, 3, 4, 7-9
    assert rp.scales() == ("quick", "medium", "paper")
    with pytest.raises(ValueError, match="unknown figure 'fig-99'.*noisy-training"):
        rp.reproduce(["fig-99"], "quick", "unused", "cmd")
    with pytest.raises(ValueError, match="scale must be one of"):
        rp.reproduce(["layerwise"], "huge", "unused", "cmd")


def test_a_figure_is_one_registered_module(tmp_path, monkeypatch):
    """The protocol: a figure registered by name runs on its scale's preset in its own folder
    and its claims reach the report; a scale it has no preset for is refused before work."""
    import diffeosense.experiments.figure as fm

    seen = []

    def run(cfg, ctx):
        seen.append((cfg, ctx.scale, ctx.out.name, ctx.runs.name))
        ctx.write_table(pd.DataFrame({"x": [1, 2]}), "t.csv", {"n": cfg})
        return fm.FigureOutput([], [{"text": "a claim", "verdict": "shown", "evidence": "e"}])

    monkeypatch.setattr(fm, "_REGISTRY", dict(fm._REGISTRY))
    fm.register_figure(fm.Figure("toy-figure", number=99, presets={"quick": 3}, run=run))
    assert fm.list_figures()[-1] == "toy-figure"
    html = rp.reproduce(["toy-figure"], "quick", tmp_path, "cmd",
                        rp.ReproduceOptions(progress=False)).read_text()
    assert seen == [(3, "quick", "toy_figure", "runs")]
    assert read_table(tmp_path / "toy_figure" / "t.csv")[1]["config"] == {"n": 3}
    assert "a claim" in html
    with pytest.raises(ValueError, match="'toy-figure' has no 'paper' preset"):
        rp.reproduce(["toy-figure"], "paper", tmp_path, "cmd")


def test_scale_detection_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(sdf.PRESETS, "quick", sdf.ScaleDetectionFigureConfig(
        sd1.preset("small", width=8, train_size=64, epochs=1, seeds=(0,), n_probes=32),
        sd2.preset("quick", models=("lenet",), seeds=(0, 1, 2), train_size=32, epochs=1,
                   n_probes=16)))
    path = rp.reproduce(["scale-detection"], "quick", tmp_path, "cmd",
                        rp.ReproduceOptions(workers=1, progress=False))
    out = tmp_path / "scale_detection"
    for f in ("scale_detection_1d.png", "scale_detection_1d.svg", "scale_detection_2d.png",
              "scale_detection_2d.svg"):
        assert (out / f).stat().st_size > 1000
    # Each figure table carries its checked sidecar: which figure, the scale; a truncated or
    # edited table is refused, by name.
    summary, meta = read_table(out / "scale_detection_2d_summary.csv")
    assert len(summary) == 3 and (meta["figure"], meta["scale"]) == ("scale-detection", "quick")
    assert meta["config"]["2d"]["train_size"] == 32 and meta["table"]["rows"] == 3
    for name in ("scale_detection_2d_summary.csv", "scale_detection_1d_exponents.csv"):
        back, _ = assert_tampering_refused(out / name, read_table)
        pd.testing.assert_frame_equal(back, pd.read_csv(out / name))
    text = path.read_text()
    root = ET.fromstring(text.split("\n", 1)[1])
    assert [f.get("id") for f in root.iter("figure")] == ["fig-scale-1d", "fig-scale-2d"]
    claims = [t for t in root.iter("table")
              if t.find("thead/tr/th") is not None and t.find("thead/tr/th").text == "claim"][0]
    rows = claims.findall("tbody/tr")
    assert len(rows) == 7  # 2 for Fig. 7, 4 for Figs. 8-9, the check that the 2D nets learn
    err = summary["test_error"].mean()
    assert f"lenet {err:.1%}" in "".join(rows[6].itertext())
    from diffeosense.experiments.figures.noisy_training import log_correlation

    rho = log_correlation(summary["test_error"].clip(lower=0.5 / 1024), summary["D"])
    assert f"rho(eps, D) = {rho:+.2f}" in "".join(rows[2].itertext())
    meta = json.loads((tmp_path / "reproduce.json").read_text())
    assert meta["figures"]["scale-detection"]["2d"]["train_size"] == 32
    assert meta["seconds"]["scale-detection"] > 0


def test_cli_lists_the_figures_and_refuses_unknown_ones(capsys):
    from diffeosense.cli import main

    with pytest.raises(SystemExit):
        main(["reproduce", "fig-99", "--out", "x"])
    err = capsys.readouterr().err
    assert "noisy-training" in err and "scale-detection" in err and "all" in err


def test_scale_2d_claims_count_an_error_of_zero_as_half_a_test_image():
    from diffeosense.experiments.figures.noisy_training import log_correlation

    summary = pd.DataFrame({"model": ["a", "b", "c", "d"], "seed": 0,
                            "test_error": [0.05, 0.01, 0.0, 0.002],
                            "D": [0.08, 0.02, 0.04, 0.016], "G": [0.7, 0.5, 50.0, 7.0]})
    summary["R"] = summary.D / summary.G
    sens = pd.DataFrame(columns=["model", "seed", "state", "kind", "depth", "D", "G"])
    claims = sdf.scale_2d_claims(summary, sens, n_test=1024)
    eps = [0.05, 0.01, 0.5 / 1024, 0.002]
    for claim, q in zip(claims[:3], "DGR", strict=True):
        rho = log_correlation(eps, summary[q])
        assert f"rho(eps, {q}) = {rho:+.2f}" in claim["evidence"]
        assert "errors of 0 counted as 0.5/1024" in claim["evidence"]
    assert claims[0]["estimate"].startswith(f"{log_correlation(eps, summary.D):+.2f} [")
    assert claims[0]["verdict"] in ("shown", "not shown", "contradicted")
    # The learning check: every net below 40 % error.
    assert claims[-1]["verdict"] == "shown"


def test_the_report_sets_another_runs_claims_beside_its_own(tmp_path, monkeypatch):
    import diffeosense.experiments.figure as fm

    def run(cfg, ctx):
        return fm.FigureOutput([], [
            {"text": "x rises", "verdict": cfg, "estimate": f"{ctx.scale} [0, 1]",
             "evidence": "e"},
            {"text": f"only at {ctx.scale}", "verdict": None, "evidence": "e"}])

    monkeypatch.setattr(fm, "_REGISTRY", dict(fm._REGISTRY))
    fm.register_figure(fm.Figure("toy-claims", number=98,
                                 presets={"quick": "not shown", "medium": "shown"}, run=run))
    opts = rp.ReproduceOptions(progress=False)
    rp.reproduce(["toy-claims"], "quick", tmp_path / "q", "cmd q", opts)
    scale, claims = rp.recorded_claims(tmp_path / "q")
    assert scale == "quick" and [c.verdict for c in claims] == ["not shown", None]
    html = rp.reproduce(["toy-claims"], "medium", tmp_path / "m", "cmd m", opts,
                        compare=tmp_path / "q").read_text()
    root = ET.fromstring(html.split("\n", 1)[1])
    table = next(t for t in root.iter("table") if t.find("thead") is not None and "claim" in
                 [th.text for th in t.iter("th")])
    assert [th.text for th in table.iter("th")][:5] == [
        "claim", "this run", "estimate [95 % interval]", "quick (q)",
        "its estimate [95 % interval]"]
    rows = [["".join(td.itertext()) for td in tr.iter("td")] for tr in table.find("tbody")]
    assert rows[0][:5] == ["x rises", "shown", "medium [0, 1]", "not shown", "quick [0, 1]"]
    assert rows[1][:5] == ["only at medium", "cannot tell", "", "", ""]  # not judged there
    # A folder without recorded claims: what to do.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "reproduce.json").write_text(json.dumps({"command": "the old one"}))
    with pytest.raises(ValueError, match="records no claims.*the old one"):
        rp.reproduce(["toy-claims"], "medium", tmp_path / "m2", "c", opts,
                     compare=tmp_path / "old")
    assert not (tmp_path / "m2").exists()
    with pytest.raises(ValueError, match="no reproduce.json"):
        rp.recorded_claims(tmp_path)
