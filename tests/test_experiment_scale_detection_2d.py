"""The 2D scale-detection task as a dataset of train/measure, and the deep-net experiment."""

from __future__ import annotations

import json

import pytest
import torch

from diffeosense.data import DataConfig, list_datasets, load_dataset
from diffeosense.data.scale_detection import active_positions, dataset_task, label_pairs
from diffeosense.experiments.scale_detection_2d import preset, run
from diffeosense.probes import balanced_probes, task_perturbation


def test_scale_detection_2d_is_a_dataset():
    assert "scale-detection-2d" in list_datasets()
    ds = load_dataset(DataConfig(name="scale-detection-2d:size=10,xi=5,gap=2", P=40, seed=1))
    assert ds.x_train.shape == (40, 1, 10, 10) and ds.num_classes == 1
    assert ds.x_test.shape[0] == 160  # test 4 P, the paper's recipe
    assert set(ds.y_train.tolist()) == {-1.0, 1.0} and ds.y_train.sum() == 0  # balanced
    # Not normalized: exactly two active pixels of value d^2 / 2, labels from their distance.
    pos = active_positions(ds.x_test)
    assert torch.all(ds.x_test.flatten(1).max(1).values == 50.0)
    torch.testing.assert_close(label_pairs(pos, dataset_task(ds.name)), ds.y_test)
    # The same spec gives the same split; another seed another.
    again = load_dataset(DataConfig(name=ds.name, P=40, seed=1))
    assert torch.equal(again.x_train, ds.x_train)
    other = load_dataset(DataConfig(name=ds.name, P=40, seed=2))
    assert not torch.equal(other.x_train, ds.x_train)
    assert task_perturbation("scale-detection-2d") == (
        "pixel-move:dim=2,size=28,xi=14.0,gap=2.0,task=distance")


@pytest.mark.parametrize("name, msg", [
    ("scale-detection-2d:sise=10", "bad option"),
    ("scale-detection-2d:xi=big", "must be a number"),
    ("scale-detection-2d:size=10,xi=5,test_size=3", None),
])
def test_dataset_options_are_checked(name, msg):
    if msg is None:
        assert len(load_dataset(DataConfig(name=name, P=8)).x_test) == 2  # 3 // 2 per class
        return
    with pytest.raises(ValueError, match=msg):
        load_dataset(DataConfig(name=name, P=8))


def test_train_and_measure_cli_on_the_2d_task(tmp_path, capsys):
    """`diffeosense train --data scale-detection-2d` trains one output with the hinge loss;
    `measure` on its checkpoint uses the run's own split and the pixel move by default."""
    from diffeosense.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "--model", "lenet", "--data", "scale-detection-2d",
                 "--P", "16", "--epochs", "1", "--batch-size", "8", "--lr", "0.05",
                 "--out", str(run_dir), "--no-progress"]) == 0
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    assert cfg["loss"] == "hinge" and cfg["data"]["P"] == 16
    assert main(["measure", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"),
                 "--n-probes", "16", "--out", str(tmp_path / "sens"), "--no-plot",
                 "--no-progress"]) == 0
    meta = json.loads((tmp_path / "sens" / "sensitivity.meta.json").read_text())
    assert "pixel-move" in json.dumps(meta["config"]["perturbation"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_probes"] == 16 and out["output"]["D"] > 0
    # The experiments' conventions: class-balanced probes (measure called directly on them
    # gives the same table) and the task's pixel move.
    from diffeosense.data.scale_detection import ActivePixelMove
    from diffeosense.sensitivity import SensitivityResult, measure
    from diffeosense.train import load_checkpoint

    model, tcfg, _ = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    ds = load_dataset(tcfg.data)
    ref = measure(model, balanced_probes(ds.x_test, ds.y_test, None), n_probes=16, seed=0,
                  perturbation=ActivePixelMove(dataset_task(ds.name), label_preserving=True,
                                               boundary="clip"))
    got = SensitivityResult.load(tmp_path / "sens" / "sensitivity.csv").to_frame()
    assert got.iloc[-1].D == pytest.approx(ref.to_frame().iloc[-1].D, rel=1e-6)


def test_tiny_2d_experiment_end_to_end(tmp_path):
    """Two units trained in parallel worker processes (the sweep engine's local pool); each
    table is measure() on the unit's checkpoint with balanced probes and the task's move."""
    from diffeosense.data.scale_detection import ActivePixelMove
    from diffeosense.experiments.run import load_run, run_dir
    from diffeosense.experiments.scale_detection_2d import run_configs
    from diffeosense.sensitivity import measure
    from diffeosense.train import load_checkpoint

    cfg = preset("quick", train_size=16, test_size=64, epochs=1, n_probes=8,
                 models=("lenet",), seeds=(0, 1), batch_size=8)
    res = run(cfg, tmp_path, progress=False, workers=2)
    assert res.units_run == [("lenet", 0), ("lenet", 1)]
    for row in res.summary.itertuples():
        assert 0 <= row.test_error <= 1 and row.D > 0 and row.G > 0
        assert row.R == pytest.approx(row.D / row.G, rel=1e-6)
        assert row.n_probes == 8 and row.epochs_run == 1
    inp = res.sensitivity[res.sensitivity.layer == "input"]
    # Norm-matched noise: D = G, R = 1 at the input, before and after training.
    assert inp.R.to_numpy() == pytest.approx([1.0] * 4, rel=1e-5)
    folder = run_dir(run_configs(cfg)[1], res.out_dir / "runs")
    model, tcfg, info = load_checkpoint(folder / "train" / "checkpoints" / "best.pt")
    data = load_dataset(tcfg.data)
    ref = measure(model, balanced_probes(data.x_test, data.y_test, 8), layers="all",
                  n_probes=8, seed=1, perturbation=ActivePixelMove(
                      dataset_task(data.name), label_preserving=True, boundary="clip"))
    got = load_run(folder)["tables"]["best"].to_frame()
    assert list(got.layer) == list(ref.to_frame().layer)
    assert got.D.to_numpy() == pytest.approx(ref.to_frame().D.to_numpy(), rel=1e-5)
    assert res.summary.iloc[1].test_error == info["metrics"]["test_error"]
    again = run(cfg, tmp_path, progress=False, workers=2)
    assert again.units_skipped == [("lenet", 0), ("lenet", 1)] and again.units_run == []
    from diffeosense.experiments.scale_detection_2d import load_result
    from diffeosense.plots.scale_detection_2d import save_result_figure

    png = save_result_figure(load_result(res.out_dir))
    assert png.stat().st_size > 10_000


def test_a_failing_unit_is_named_and_the_others_kept(tmp_path):
    cfg = preset("quick", train_size=16, test_size=64, epochs=1, n_probes=8,
                 models=("cnn1d", "lenet"), batch_size=8)
    with pytest.raises(RuntimeError, match=r"1 unit\(s\).*cnn1d seed 0 .*error.txt"):
        run(cfg, tmp_path, progress=False, workers=1)
    # The net that can take the images finished; a second call does not re-train it.
    from diffeosense.experiments.run import run_dir, run_status
    from diffeosense.experiments.scale_detection_2d import run_configs

    root = next(tmp_path.glob("scale-detection-2d-*")) / "runs"
    statuses = [run_status(run_dir(c, root)) for c in run_configs(cfg)]
    assert statuses == ["failed", "done"]
    assert "cnn1d" in (run_dir(run_configs(cfg)[0], root) / "error.txt").read_text()


def test_bad_2d_configs():
    with pytest.raises(ValueError, match="unknown or no models"):
        preset("quick", models=("lenet", "vgg12"))
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_lr_by_model_sets_each_nets_rate_and_keeps_old_hashes():
    cfg = preset("paper", lr=0.05, lr_by_model={"vgg11": 0.01})
    assert cfg.train_config("vgg11", 0).lr == 0.01
    assert cfg.train_config("lenet", 0).lr == 0.05
    assert cfg.folder_hash() != preset("paper").folder_hash()
    # Without per-net rates the folder is the one written before the field existed (the
    # committed H100 run), so finished runs are still found.
    from pathlib import Path

    written = json.loads((Path(__file__).parents[1] / "docs/results/scale_detection_2d_paper_gpu"
                          / "config.json").read_text())
    assert preset("paper").folder_hash() == written["config_hash"]
    for bad in ({"vgg12": 0.01}, {"vgg11": 0.0}, {"vgg11": "fast"}, {"vgg11": float("nan")}):
        with pytest.raises(ValueError, match="lr_by_model"):
            preset("paper", lr_by_model=bad)


def test_cli_lr_option(tmp_path, capsys, monkeypatch):
    from diffeosense.cli import main
    from diffeosense.cli.scale_detection_2d import _parse_lr
    from diffeosense.experiments import scale_detection_2d as sd2

    assert _parse_lr(["0.05", "vgg11=0.01"]) == {"lr": 0.05, "lr_by_model": {"vgg11": 0.01}}
    seen = []

    def fake_run(cfg, *a, **k):  # record the config; stop before any training
        seen.append(cfg)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(sd2, "run", fake_run)
    monkeypatch.setitem(sd2.PRESETS, "quick",
                        sd2.preset("quick", lr_by_model={"lenet": 0.2, "vgg11": 0.3}))
    # MODEL=LR alone keeps the preset's other per-net rates; a plain LR replaces them.
    main(["scale-detection-2d", "--lr", "vgg11=0.01", "--out", str(tmp_path)])
    main(["scale-detection-2d", "--lr", "0.07", "resnet18=0.01", "--out", str(tmp_path)])
    assert seen[0].lr_by_model == {"lenet": 0.2, "vgg11": 0.01}
    assert seen[1].lr == 0.07 and seen[1].lr_by_model == {"resnet18": 0.01}
    capsys.readouterr()
    for bad, msg in ((["fast"], "LR or MODEL=LR"), (["0.1", "0.2"], "two rates"),
                     (["vgg11=-1"], "must be > 0")):
        assert main(["scale-detection-2d", "--lr", *bad, "--out", str(tmp_path)]) == 2
        assert msg in capsys.readouterr().err
