"""``diffeosense pooling``: tables with sidecars, figures, init vs trained, clear errors."""

from __future__ import annotations

import json

import numpy as np
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
