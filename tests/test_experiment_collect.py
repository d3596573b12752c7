"""collect: every finished run in one tidy table, with its config columns; round trips.

Checked: the table has one row per (run, stage, copy, layer, view, channel), i.e. exactly the rows of
the runs' own sensitivity tables, with each run's config in its columns (the short grid names
agree with the dotted ones); unfinished runs are left out; CSV and Parquet round-trip
exactly; a truncated table is refused; the CLI writes both files and refuses an empty folder.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from diffeosense.cli import main
from diffeosense.experiments.collect import ALIASES, collect, load_table, save_table
from diffeosense.experiments.run import load_run, run_dir
from diffeosense.experiments.sweep import expand, parse_sweep, run_sweep

SPEC = {
    "grid": {"model": ["simplecnn"], "noise": [0.0, 0.5], "P": [200], "epochs": [1],
             "lr": [0.05]},
    "train": {"batch_size": 50, "eval_batch_size": 500},
    "model_kwargs": {"simplecnn": {"depth": 2, "width": 4}},
    "measure": {"layers": "conv", "n_probes": 20, "channels": True,
                "measure_kwargs": {"batch_size": 10}, "probe_noise": "train",
                "shuffled": 1},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfgs = expand(parse_sweep(SPEC))
    assert run_sweep(cfgs, root, workers=1).counts()["done"] == 2
    return root, cfgs


def test_collect_holds_every_row_with_its_config(sweep, tmp_path):
    root, cfgs = sweep
    df = collect(root)
    n = 0
    for cfg in cfgs:
        r = load_run(run_dir(cfg, root))
        mine = df[df.run == cfg.hash()]
        for res in r["tables"].values():
            t = res.to_frame()
            stage, k = res.config["stage"], res.config["copy"]
            got = mine[(mine.stage == stage) & (mine["copy"] == k)].reset_index(drop=True)
            pd.testing.assert_frame_equal(got[list(t.columns)], t)
            n += len(t)
        assert (mine["train.data.noise"] == cfg.train.data.noise).all()
        assert (mine["measure.probe_noise"] == "train").all()
        assert (mine["train.model_kwargs"] == json.dumps({"depth": 2, "width": 4})).all()
        assert (mine["test_error"] == r["done"]["test_error"]).all()
    assert len(df) == n and set(df.view) == {"full", "channel", "channel-mean"}
    assert sorted(df["copy"].unique()) == [-1, 0] and set(df.stage) == {"init", "trained"}
    for alias, col in ALIASES.items():
        pd.testing.assert_series_equal(df[alias], df[col], check_names=False)

    # An unfinished run (no done marker) is not collected.
    partial = tmp_path / "copy"
    import shutil

    shutil.copytree(root, partial)
    (partial / cfgs[0].hash() / "done").unlink()
    assert set(collect(partial).run) == {cfgs[1].hash()}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip(sweep, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    df = collect(sweep[0])
    path = save_table(df, tmp_path / f"all{suffix}")
    back = load_table(path)
    pd.testing.assert_frame_equal(back, df)
    # A truncated table no longer matches its sidecar.
    if suffix == ".csv":
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-2]))
        with pytest.raises(ValueError, match="does not match its sidecar"):
            load_table(path)


def test_collect_cli(sweep, tmp_path, capsys):
    root = sweep[0]
    out = tmp_path / "t.csv"
    assert main(["collect", str(root), "--out", str(out)]) == 0
    assert f"{out}: " in capsys.readouterr().out
    pd.testing.assert_frame_equal(load_table(out), collect(root))
    assert main(["collect", str(tmp_path / "empty-does-not-exist")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["collect", str(tmp_path / "empty")]) == 2
    assert "no finished run" in capsys.readouterr().err
    with pytest.raises(ValueError, match="use .csv or .parquet"):
        save_table(collect(root), tmp_path / "t.xlsx")
