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
