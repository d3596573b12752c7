"""collect: every finished run in one tidy table, with its config columns; round trips.

Checked: the table has one row per (run, stage, copy, layer, view, channel), i.e. exactly the rows of
the runs' own sensitivity tables, with each run's config in its columns (the short grid names
agree with the dotted ones); unfinished runs are left out; CSV and Parquet round-trip
exactly; a truncated or edited table is refused, by name; the CLI writes both files and refuses an empty folder.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from _tables import assert_tampering_refused

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
    root = sweep[0]
    df = collect(root)
    path = save_table(df, tmp_path / f"all{suffix}", root=root)
    # A truncated or edited table no longer matches its sidecar: refused, by name.
    back = assert_tampering_refused(path, load_table)
    pd.testing.assert_frame_equal(back, df)
    meta = json.loads((tmp_path / "all.meta.json").read_text())
    assert meta["root"] == str(root) and meta["runs"] == 2 and "provenance" in meta
    assert meta["table"]["file"] == path.name and meta["table"]["rows"] == len(df)


def test_run_hashes_that_look_like_numbers_stay_text(tmp_path):
    """A run folder named like a number ('1e50', '0012') reads back as the same text."""
    df = pd.DataFrame({"run": ["1e50", "0012"], "noise": [None, "x"], "D": [0.5, 1.5]})
    back = load_table(save_table(df, tmp_path / "t.csv"))
    assert back["run"].tolist() == ["1e50", "0012"]
    pd.testing.assert_frame_equal(back, df)


def test_tables_collected_by_older_versions_are_refused(sweep, tmp_path):
    """A table whose sidecar has no row count and hash (diffeosense.collect/1) cannot be
    checked; it is cheap to collect again, so it is an error that says how."""
    path = save_table(collect(sweep[0]), tmp_path / "old.csv")
    side = tmp_path / "old.meta.json"
    meta = json.loads(side.read_text())
    del meta["table"]
    side.write_text(json.dumps({**meta, "format": "diffeosense.collect/1"}))
    with pytest.raises(ValueError, match=rf"{path} was collected by an older diffeosense.*"
                                         rf"collect it again"):
        load_table(path)
    side.unlink()
    with pytest.raises(FileNotFoundError, match="has no sidecar old.meta.json"):
        load_table(path)


def test_collect_cli(sweep, tmp_path, capsys):
    root = sweep[0]
    out = tmp_path / "t.csv"
    assert main(["collect", str(root), "--out", str(out)]) == 0
    assert f"{out}: " in capsys.readouterr().out
    pd.testing.assert_frame_equal(load_table(out), collect(root))
    assert json.loads((tmp_path / "t.meta.json").read_text())["root"] == str(root)
    assert main(["collect", str(tmp_path / "empty-does-not-exist")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["collect", str(tmp_path / "empty")]) == 2
    assert "no finished run" in capsys.readouterr().err
    with pytest.raises(ValueError, match="use .csv or .parquet"):
        save_table(collect(root), tmp_path / "t.xlsx")
    # A .csv and a .parquet of one stem would share one sidecar: refused before writing.
    both = [str(tmp_path / "u.csv"), str(tmp_path / "u.parquet")]
    assert main(["collect", str(root), "--out", *both]) == 2
    assert "share the sidecar" in capsys.readouterr().err
    assert not (tmp_path / "u.csv").exists()


def test_collect_cli_default_output(sweep, tmp_path, capsys):
    import shutil

    root = tmp_path / "sweep"
    shutil.copytree(sweep[0], root)
    assert main(["collect", str(root)]) == 0
    assert capsys.readouterr().out.startswith(f"{root / 'collected.csv'}: ")
    pd.testing.assert_frame_equal(load_table(root / "collected.csv"), collect(root))


def test_collect_names_the_unfinished_runs_it_skips(sweep, tmp_path, capsys):
    import shutil

    from diffeosense.experiments.collect import unfinished_runs

    root = tmp_path / "sweep"
    shutil.copytree(sweep[0], root)
    partial, failed = (root / c.hash() for c in sweep[1])
    (partial / "done").unlink()
    assert unfinished_runs(root) == [(partial, "partial")]
    # One finished run left: it is collected, and the other is named.
    assert main(["collect", str(root), "--out", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert ("note: 1 unfinished run(s) under " f"{root} left out (no 'done' marker: partial "
            f"{partial.name}); finish them with the sweep") in out
    # None finished: the error names what is there.
    (failed / "done").unlink()
    (failed / "error.txt").write_text("Traceback ...")
    assert main(["collect", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"no finished run under {root}" in err and "2 unfinished run(s)" in err
    assert f"partial {partial.name}" in err and f"failed {failed.name}" in err
