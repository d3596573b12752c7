"""``diffeosense measure`` with the published conventions (--batchnorm, --statistic, --noise)."""

from __future__ import annotations

import json

import pandas as pd

from diffeosense.cli import main


def test_measure_cli_passes_the_conventions_through(tmp_path, capsys):
    out = tmp_path / "m"
    rc = main(["measure", "--model", "simplecnn", "--layers", "input,output", "--n-probes", "15",
               "--batchnorm", "batch", "--statistic", "component-median", "--noise", "2.5",
               "--no-plot", "--no-progress", "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "sensitivity.meta.json").read_text())["config"]
    assert meta["batchnorm"] == "batch" and meta["statistic"] == "component-median"
    assert meta["probe_noise"] == 2.5 and meta["batch_size"] == 15
    df = pd.read_csv(out / "sensitivity.csv")
    assert list(df.layer) == ["input", "output"] and (df.D > 0).all()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_probes"] == 15


def test_measure_cli_refuses_a_negative_noise(tmp_path, capsys):
    rc = main(["measure", "--model", "simplecnn", "--n-probes", "4", "--noise", "-1",
               "--no-plot", "--no-progress", "--out", str(tmp_path / "m")])
    assert rc == 2 and "probe_noise" in capsys.readouterr().err


def test_measure_refuses_a_folder_holding_another_models_result(tmp_path, capsys):
    out = tmp_path / "m"
    common = ["--n-probes", "6", "--no-plot", "--no-progress", "--out", str(out)]
    assert main(["measure", "--model", "lenet", *common]) == 0
    before = (out / "sensitivity.csv").read_bytes()
    capsys.readouterr()
    for other in (["--model", "simplecnn"], ["--model", "lenet", "--model-seed", "1"]):
        assert main(["measure", *other, *common]) == 2
        err = capsys.readouterr().err
        assert f"{out} already holds the result of another model (model lenet" in err, err
        assert "choose another --out, or delete" in err
        assert (out / "sensitivity.csv").read_bytes() == before
    # The same model again (other options) replaces its own result.
    assert main(["measure", "--model", "lenet", "--seed", "3", *common]) == 0
    assert json.loads((out / "sensitivity.meta.json").read_text())["config"]["seed"] == 3


def test_pooling_refuses_a_folder_holding_another_models_result(tmp_path, capsys):
    out = tmp_path / "p"
    common = ["--n-probes", "6", "--n-shuffles", "1", "--no-plot", "--no-progress", "--out",
              str(out)]
    assert main(["pooling", "--model", "lenet", *common]) == 0
    capsys.readouterr()
    assert main(["pooling", "--model", "simplecnn", *common]) == 2
    assert "already holds the result of another model" in capsys.readouterr().err


def test_measure_checkpoint_on_a_random_file_says_what_it_is_not(tmp_path, capsys):
    """Never torch's advice to retry with weights_only=False (it would run the file's code),
    and no 'earlier checkpoint' for a file that is no checkpoint of a run."""
    import torch

    junk = tmp_path / "random.pt"
    junk.write_bytes(bytes(range(256)) * 8)
    zipped = tmp_path / "checkpoints" / "last.pt"  # a checkpoint's name, nothing beside it
    zipped.parent.mkdir()
    torch.save({"weights": torch.zeros(3)}, zipped)
    zipped.write_bytes(zipped.read_bytes()[:300])
    for f in (junk, zipped):
        rc = main(["measure", "--checkpoint", str(f), "--no-plot", "--no-progress", "--out",
                   str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{f} is not a" in err, err
        for unsafe in ("weights_only", "earlier", "add_safe_globals"):
            assert unsafe not in err, err
        assert not (tmp_path / "m").exists()
