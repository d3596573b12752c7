"""``diffeosense pooling``: tables with sidecars, figures, init vs trained, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from diffeosense.cli import main
from diffeosense.pooling import PoolingReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--n-probes", "12", "--batch-size", "12", "--n-shuffles", "2", "--no-progress"]


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A LeNet trained for one epoch on 256 embedded-MNIST images (checkpoints init, last)."""
    out = tmp_path_factory.mktemp("lenet")
    rc = main(["train", "--model", "lenet", "--data", "mnist-embedded", "--P", "256",
               "--epochs", "1", "--keep-every", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out / "checkpoints"


def test_checkpoint_with_init_writes_tables_and_figures(lenet_run, tmp_path, capsys):
    out = tmp_path / "pool"
    rc = main(["pooling", "--checkpoint", str(lenet_run / "last.pt"), "--init-checkpoint",
               str(lenet_run / "init.pt"), "--data", "mnist-embedded", "--out", str(out),
               *FAST])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    for prefix in ("", "init_"):
        for name in ("pooling", "sensitivity", "spectra"):
            assert (out / f"{prefix}{name}.csv").exists()
            meta = json.loads((out / f"{prefix}{name}.meta.json").read_text())
            assert meta["provenance"]["argv"] and "config" in meta
    for png in ("spectra.png", "pooling.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert set(summary["homogeneous_fraction"]) == {"features.conv1", "features.conv2"}
    rep = PoolingReport.load(out)
    init = PoolingReport.load(out, prefix="init_")
    assert rep.config["n_shuffles"] == 2 and init.config["n_shuffles"] == 0
    assert rep.config["measure"]["checkpoint"].endswith("last.pt")
    assert set(init.sensitivity.variant) == {"original"}
    # same probes, diffeos and noise for init and trained: the input rows agree exactly
    a = rep.sensitivity_result().to_frame("full").set_index("layer").loc["input"]
    b = init.sensitivity_result().to_frame("full").set_index("layer").loc["input"]
    assert a.D == b.D and a.G == b.G
    # the spectra differ between init and trained weights
    assert not np.allclose(rep.spectra.to_frame().fraction, init.spectra.to_frame().fraction)


def test_initialized_model(tmp_path, capsys):
    out = tmp_path / "init"
    rc = main(["pooling", "--model", "simplecnn", "--data", "mnist-embedded", "--out", str(out),
               "--format", "json", "--no-plot", "--layers", "conv+activation", *FAST])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = PoolingReport.load(out, fmt="json")
    assert rep.config["measure"]["model"] == "simplecnn"
    assert rep.to_frame().channel_fraction.between(0, 1).all()
    assert not (out / "pooling.png").exists()


def test_clear_errors(tmp_path, capsys, lenet_run):
    rc = main(["pooling", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "no checkpoint" in err and "Traceback" not in err
    rc = main(["pooling", "--model", "lenet", "--init-checkpoint", str(lenet_run / "init.pt"),
               "--out", str(tmp_path)])
    assert rc == 2 and "--init-checkpoint goes with --checkpoint" in capsys.readouterr().err
    rc = main(["pooling", "--model", "lenet", "--n-shuffles", "-1", "--out", str(tmp_path)])
    assert rc == 2 and ">= 0" in capsys.readouterr().err
    rc = main(["pooling", "--model", "no-such-net", "--out", str(tmp_path), *FAST])
    assert rc == 2 and "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --checkpoint and --model are exclusive
        main(["pooling", "--model", "lenet", "--checkpoint", "x.pt", "--out", str(tmp_path)])


# ------------------------------------------------------- the 1D scale-detection experiment's nets
SD_FAST = ["--n-shuffles", "2", "--batch-size", "16", "--seed", "3",
           "--denominator", "pairs-incl-diag", "--no-progress", "--no-plot"]


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory):
    """A unit of `diffeosense scale-detection` (lazy regime, N = 16, xi = 4, gap 2: 40 test
    pairs; stride 2, 3 layers of width 4, 2 epochs): its config and checkpoint folder."""
    from diffeosense.experiments.scale_detection import preset, run

    cfg = preset("lazy", size=16, xi=4, gap=2, train_size=24, strides=(2,), depths=(3,),
                 width=4, epochs=2, seeds=(0,), measure_batch_size=64)
    res = run(cfg, tmp_path_factory.mktemp("sd"), progress=False)
    return cfg, res.out_dir / "runs" / res.units[0]["run"] / "train" / "checkpoints"


def _direct_report(cfg, checkpoint, n_probes, n_shuffles):
    """pooling_report called directly as the experiment measures: the task's label-preserving
    pixel move, the class-balanced test split, the pair denominator."""
    from diffeosense.data.scale_detection import ActivePixelMove, make_scale_detection
    from diffeosense.pooling import pooling_report
    from diffeosense.probes import balanced_probes
    from diffeosense.train import load_checkpoint

    data = make_scale_detection(cfg.data_config())
    probes = balanced_probes(data.x_test, data.y_test, n_probes)
    move = ActivePixelMove(data.config, label_preserving=True, boundary="clip")
    model, _, _ = load_checkpoint(checkpoint)
    return pooling_report(model, probes, n_shuffles=n_shuffles, seed=3, perturbation=move,
                          n_probes=len(probes), batch_size=16, denominator="pairs-incl-diag")


def _assert_same_report(saved: PoolingReport, direct: PoolingReport):
    cols = ["layer", "D", "G", "R", "D_shuffled", "G_shuffled", "channel_fraction",
            "homogeneous_fraction"]
    a, b = saved.to_frame(), direct.to_frame()
    assert list(a.layer) == list(b.layer)
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True),
                                  check_exact=False, rtol=1e-9, check_dtype=False)
    spec = ["layer", "eigenvalue", "multiplicity", "power", "fraction"]
    pd.testing.assert_frame_equal(
        saved.spectra.to_frame()[spec].reset_index(drop=True),
        direct.spectra.to_frame()[spec].reset_index(drop=True), check_exact=False, rtol=1e-9,
        check_dtype=False)


def test_scale_detection_checkpoint_is_measured_with_the_tasks_move(sd_run, tmp_path, capsys):
    cfg, ck = sd_run
    out = tmp_path / "pool"
    rc = main(["pooling", "--checkpoint", str(ck / "last.pt"), "--init-checkpoint",
               str(ck / "init.pt"), "--init-shuffles", "2", "--n-probes", "16",
               "--out", str(out), *SD_FAST])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep, init = PoolingReport.load(out), PoolingReport.load(out, prefix="init_")
    measured = rep.config["measure"]
    assert measured["perturbation"].startswith("pixel-move:dim=1,size=16,xi=4.0,gap=2.0")
    assert measured["data"] == cfg.dataset_name() and measured["n_measured"] == 16
    # The same numbers as pooling_report called directly with the task's move on the first
    # 16 class-balanced test pairs (the split's first 16 would give other probes).
    _assert_same_report(rep, _direct_report(cfg, ck / "last.pt", 16, 2))
    _assert_same_report(init, _direct_report(cfg, ck / "init.pt", 16, 2))
    # The image diffeo on the same probes gives other numbers: the default is not it.
    rc = main(["pooling", "--checkpoint", str(ck / "last.pt"), "--n-probes", "16",
               "--perturbation", "diffeo", "--out", str(tmp_path / "diffeo"), *SD_FAST])
    assert rc == 0, capsys.readouterr().err
    d = PoolingReport.load(tmp_path / "diffeo").to_frame()
    assert not np.allclose(d.D.to_numpy(), rep.to_frame().D.to_numpy())

    # "all": the whole test split (40 pairs, 20 per class).
    rc = main(["pooling", "--checkpoint", str(ck / "last.pt"), "--n-probes", "all",
               "--out", str(tmp_path / "all"), *SD_FAST])
    assert rc == 0, capsys.readouterr().err
    every = PoolingReport.load(tmp_path / "all")
    assert every.config["measure"]["n_measured"] == 40
    _assert_same_report(every, _direct_report(cfg, ck / "last.pt", None, 2))


def test_scale_detection_clear_errors(sd_run, lenet_run, tmp_path, capsys):
    import shutil

    import torch

    cfg, ck = sd_run
    # A 1D net given image data, a 2D net given the 1D task: one line, what to do.
    rc = main(["pooling", "--checkpoint", str(ck / "last.pt"), "--data", "mnist-embedded",
               "--out", str(tmp_path / "a"), *SD_FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "1D network" in err and "[1, 28, 28]" in err and "omit --data" in err
    rc = main(["pooling", "--checkpoint", str(lenet_run / "last.pt"), "--data",
               "scale-detection-1d", "--out", str(tmp_path / "b"), *SD_FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "2D network" in err and "[1, 64]" in err
    # A unit checkpoint written before the units named their task (bare 'scale-detection-1d',
    # the default task, N = 64), in the layout of that time (units/s2-seed0/train): refused,
    # with the --data of the run's task.
    root = ck.parents[3]
    old = tmp_path / "old" / root.name
    shutil.copytree(root, old)
    (old / "units" / "s2-seed0").mkdir(parents=True)
    (old / ck.relative_to(root).parent).rename(old / "units" / "s2-seed0" / "train")
    last = old / "units" / "s2-seed0" / "train" / "checkpoints" / "last.pt"
    blob = torch.load(last, weights_only=True)
    blob["config"]["data"]["name"] = "scale-detection-1d"
    torch.save(blob, last)
    rc = main(["pooling", "--checkpoint", str(last), "--out", str(tmp_path / "c"), *SD_FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "before its checkpoints named their task" in err
    assert f"--data '{cfg.dataset_name()}'" in err
    # The same checkpoint in today's layout (runs/<run hash>/train) is found alike.
    new = tmp_path / "new" / root.name
    shutil.copytree(root, new)
    torch.save(blob, new / ck.relative_to(root) / "last.pt")
    rc = main(["pooling", "--checkpoint", str(new / ck.relative_to(root) / "last.pt"), "--out",
               str(tmp_path / "c2"), *SD_FAST])
    err = capsys.readouterr().err
    assert rc == 2 and f"--data '{cfg.dataset_name()}'" in err
    # ... and measured on the run's task with that --data (its P and seed are kept).
    rc = main(["pooling", "--checkpoint", str(last), "--data", cfg.dataset_name(),
               "--n-probes", "16", "--out", str(tmp_path / "d"), *SD_FAST])
    assert rc == 0, capsys.readouterr().err
    _assert_same_report(PoolingReport.load(tmp_path / "d"),
                        _direct_report(cfg, ck / "last.pt", 16, 2))
    with pytest.raises(SystemExit):  # argparse: a number >= 2 or "all"
        main(["pooling", "--checkpoint", str(last), "--n-probes", "some", "--out",
              str(tmp_path / "e")])
