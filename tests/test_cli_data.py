"""The user's own data through every command: train, measure, pooling, sweep, reproduce on a
folder of images and on an .npz, end to end via ``diffeosense.cli.main``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffeosense.cli import main

TINY = ["--model", "simplecnn", "--model-kw", "depth=1", "width=4"]


@pytest.fixture
def photos(tmp_path):
    """``photos/<class>/*.png``: 3 classes x 6 RGB images of 12 x 10 pixels."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def digits(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "digits.npz"
    np.savez(path, x=rng.integers(0, 256, (40, 14, 14), np.uint8), y=rng.integers(0, 3, 40),
             x_test=rng.integers(0, 256, (10, 14, 14), np.uint8), y_test=rng.integers(0, 3, 10))
    return path


def _result(out):
    return json.loads((out / "sensitivity.meta.json").read_text())


def test_train_then_measure_a_folder_keeps_its_resize_and_crop(photos, tmp_path, capsys):
    run = tmp_path / "run"  # a fully connected net: it takes one image size only
    assert main(["train", "--model", "fc2", "--model-kw", "width=8", "--data",
                 f"folder:{photos}", "--resize", "11", "--crop", "10", "--epochs", "1",
                 "--batch-size", "8", "--out", str(run), "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())["config"]["data"]
    assert (cfg["name"], cfg["resize"], cfg["crop"]) == (f"folder:{photos}", 11, 10)
    out = tmp_path / "sens"
    assert main(["measure", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                 "--n-probes", "3", "--out", str(out), "--no-plot", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n_probes"] == 3
    assert _result(out)["config"]["data"] == f"folder:{photos}"
    # the checkpoint's net takes 10 x 10 images: without the crop the folder does not fit
    rc = main(["measure", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--data",
               f"folder:{photos}", "--n-probes", "3", "--out", str(tmp_path / "s2")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot take the samples" in err and "omit --data" in err


def test_train_and_measure_an_npz(digits, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(digits), "--epochs", "1", "--batch-size", "16",
                 "--out", str(run), "--no-progress"]) == 0
    assert "test error" in capsys.readouterr().out
    out = tmp_path / "sens"
    assert main(["measure", *TINY[:2], "--data", str(digits), "--normalize", "none",
                 "--n-probes", "4", "--out", str(out), "--no-plot", "--no-progress"]) == 0
    assert main(["pooling", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--n-probes",
                 "4", "--n-shuffles", "1", "--out", str(tmp_path / "pool"), "--no-plot",
                 "--no-progress"]) == 0


def test_unlabeled_data_measures_but_does_not_train(tmp_path, capsys):
    path = tmp_path / "u.npz"
    np.savez(path, x=np.random.default_rng(0).random((12, 1, 10, 10)).astype(np.float32))
    assert main(["measure", *TINY[:2], "--data", str(path), "--n-probes", "4", "--out",
                 str(tmp_path / "m"), "--no-plot", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "--data", str(path), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "has no labels" in err and "measure" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_a_net_that_cannot_take_the_data_fails_before_training(digits, tmp_path, capsys):
    assert main(["train", "--model", "cnn1d", "--data", str(digits), "--out",
                 str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "cnn1d is a 1D network" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t" / "checkpoints").exists()


def test_bad_data_options_are_one_line(photos, tmp_path, capsys):
    for argv, words in [
        (["--data", str(photos)], f"name it folder:{photos}"),
        (["--data", f"folder:{photos}", "--resize", "0"], "resize must be"),
        (["--data", "scale-detection-1d", "--crop", "8"], "do not apply to the generated"),
        (["--data", "cifar-10"], "Did you mean cifar10"),
    ]:
        assert main(["measure", *TINY[:2], *argv, "--out", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.splitlines()) == 1, err


def test_sweep_grid_over_user_datasets(photos, digits, tmp_path):
    from diffeosense.experiments.run import load_run
    from diffeosense.experiments.sweep import expand, parse_sweep, run_sweep

    spec = parse_sweep({
        "grid": {"model": ["fc2"], "dataset": [f"folder:{photos}", str(digits)]},
        "data": {"resize": 10, "crop": 10}, "train": {"epochs": 1, "batch_size": 16},
        "measure": {"n_probes": 3}})
    cfgs = expand(spec)
    assert [c.train.data.name for c in cfgs] == [f"folder:{photos}", str(digits)]
    assert all(c.train.data.crop == 10 for c in cfgs) and cfgs[0].hash() != cfgs[1].hash()
    assert run_sweep(cfgs[:1], tmp_path / "sweep", "local", workers=1).failed == []
    done = load_run(tmp_path / "sweep" / cfgs[0].hash())
    assert done["config"].train.data.resize == 10


def test_reproduce_runs_its_grid_on_another_dataset(digits):
    from diffeosense.cli import build_parser
    from diffeosense.experiments.figures import noisy_training as nt

    args = build_parser().parse_args(["reproduce", "noisy-training", "--data", str(digits),
                                      "--resize", "16", "--out", "x"])
    assert (args.data, args.resize, args.crop) == (str(digits), 16, None)
    cfgs = nt.run_configs(nt.PRESETS["quick"], data={"name": str(digits), "resize": 16})
    assert {c.train.data.name for c in cfgs} == {str(digits)}
    assert {c.train.data.resize for c in cfgs} == {16}
    same = nt.run_configs(nt.PRESETS["quick"])
    assert {c.train.data.name for c in same} == {"mnist-embedded"}
