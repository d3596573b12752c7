"""A researcher's own model on the command line: a factory file trains with `train`, its
checkpoint rebuilds it from any folder, and `measure` takes model specs, --model-kw,
--weights, TorchScript files and --output."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from _nets import NET_PY

from diffeosense import measure
from diffeosense.cli import main
from diffeosense.data import load_dataset
from diffeosense.sensitivity import SensitivityResult
from diffeosense.sources import resolve_data, resolve_model


def _table(folder):
    return SensitivityResult.load(folder / "sensitivity.csv").to_frame()


def test_a_factory_model_trains_and_its_checkpoint_is_measured_anywhere(tmp_path, monkeypatch,
                                                                      capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mynet.py").write_text(NET_PY)
    monkeypatch.chdir(work)
    assert main(["train", "--model", "mynet.py:Net", "--model-kw", "width=5", "--epochs", "1",
                 "--P", "256", "--batch-size", "64", "--out", str(tmp_path / "run")]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    monkeypatch.chdir(tmp_path)  # elsewhere: the checkpoint names the file by its full path
    args = ["measure", "--n-probes", "40", "--no-plot", "--no-progress", "--layers", "all"]
    assert main([*args, "--checkpoint", str(ckpt), "--out", str(tmp_path / "m")]) == 0
    got = _table(tmp_path / "m")
    source = resolve_model(checkpoint=ckpt)
    assert type(source.model).__name__ == "Net" and source.model.conv.out_channels == 5
    probes = load_dataset("mnist-embedded").x_test[:40]
    direct = measure(source.model, probes, layers="all", n_probes=40, seed=0).to_frame()
    pd.testing.assert_frame_equal(got[["layer", "D", "G", "R"]], direct[["layer", "D", "G", "R"]])
    meta = json.loads((tmp_path / "m" / "sensitivity.meta.json").read_text())
    assert meta["config"]["model"] == "mynet.py:Net"  # as the user wrote it
    assert source.info["model_spec"]["name"] == f"{work / 'mynet.py'}:Net"  # what rebuilds it
    assert meta["config"]["model_kwargs"] == {"width": 5}

    # The same weights as a state dict, given to the architecture with --weights.
    torch.save(source.model.state_dict(), tmp_path / "sd.pt")
    spec = f"{work / 'mynet.py'}:Net"
    assert main([*args, "--model", spec, "--model-kw", "width=5", "--weights",
                 str(tmp_path / "sd.pt"), "--out", str(tmp_path / "w")]) == 0
    pd.testing.assert_frame_equal(_table(tmp_path / "w")[["D", "G", "R"]], got[["D", "G", "R"]])
    # ... and as TorchScript: the output row is the same.
    torch.jit.save(torch.jit.trace(source.model.eval(), probes[:2]), tmp_path / "ts.pt")
    assert main([*args, "--checkpoint", str(tmp_path / "ts.pt"), "--out",
                 str(tmp_path / "t")]) == 0
    ts = _table(tmp_path / "t")
    assert ts.layer.tolist() == ["input", "output"]
    assert ts.R.iloc[-1] == pytest.approx(got.R.iloc[-1], rel=1e-5)

    # A state dict given as --checkpoint: one line that says what to do.
    capsys.readouterr()
    assert main([*args, "--checkpoint", str(tmp_path / "sd.pt"), "--out",
                 str(tmp_path / "x")]) != 0
    assert "--model SPEC --weights" in capsys.readouterr().err


def test_measure_output_and_layer_patterns(tmp_path, capsys):
    (tmp_path / "heads.py").write_text(NET_PY)
    spec = f"{tmp_path / 'heads.py'}:Heads"
    base = ["measure", "--model", spec, "--n-probes", "20", "--no-plot", "--no-progress"]
    assert main([*base, "--output", "logits", "--layers", "re:(conv|relu|output)", "--out",
                 str(tmp_path / "a")]) == 0
    a = _table(tmp_path / "a")
    assert a.layer.tolist() == ["conv", "relu", "output"]
    assert a.iloc[-1].D > 0
    with pytest.warns(UserWarning, match="measuring 'features'"):
        assert main([*base, "--layers", "output", "--out", str(tmp_path / "b")]) == 0
    assert _table(tmp_path / "b").D.iloc[-1] != a.D.iloc[-1]
    capsys.readouterr()
    assert main([*base, "--layers", "re:nothing.*", "--out", str(tmp_path / "c")]) != 0
    assert "matched no layer" in capsys.readouterr().err
    assert main([*base, "--model-kw", "depth=2", "--out", str(tmp_path / "d")]) != 0
    assert "unexpected keyword argument 'depth'" in capsys.readouterr().err


def test_pooling_refuses_compiled_graphs_and_takes_a_spec_with_weights(tmp_path, capsys):
    (tmp_path / "mynet.py").write_text(NET_PY)
    spec = f"{tmp_path / 'mynet.py'}:Net"
    source = resolve_model(model=spec, model_kwargs={"width": 4})
    data = resolve_data("mnist-embedded", source, n_probes=2)
    model = source.build(data).eval()
    torch.jit.save(torch.jit.trace(model, data.probes), tmp_path / "ts.pt")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    base = ["pooling", "--n-probes", "16", "--n-shuffles", "1", "--no-plot", "--no-progress"]
    assert main([*base, "--checkpoint", str(tmp_path / "ts.pt"), "--out",
                 str(tmp_path / "a")]) != 0
    assert "is a torchscript file: pooling shuffles" in capsys.readouterr().err
    assert main([*base, "--model", spec, "--model-kw", "width=4", "--weights",
                 str(tmp_path / "sd.pt"), "--out", str(tmp_path / "b")]) == 0
