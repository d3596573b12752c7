"""The demo experiment: trains, measures init vs trained, and tracks every epoch."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from diffeosense.data import DataConfig, load_dataset
from diffeosense.experiments.demo import DemoConfig, format_summary, run, run_config
from diffeosense.sensitivity import SensitivityResult, measure
from diffeosense.tracking import load_track
from diffeosense.train import load_checkpoint

TINY = DemoConfig(model_kwargs={"depth": 1, "width": 4, "batch_norm": True}, epochs=1,
                  n_probes=16, track_probes=8, progress=False)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    run(TINY, out)
    return out


def test_demo_tracks_every_epoch(tmp_path):
    cfg = DemoConfig(model_kwargs={"depth": 1, "width": 4, "batch_norm": True}, epochs=1,
                     n_probes=16, track_probes=8, progress=False)
    summary = run(cfg, tmp_path)
    assert (tmp_path / "tracking.png").stat().st_size > 1000
    table, meta = load_track(tmp_path / "train" / "track.csv")
    assert sorted(table.epoch.unique()) == [0, 1] and meta["config"]["n_probes"] == 8
    traj = summary["tracking"]
    assert [t["epoch"] for t in traj] == [0, 1]
    out = table[(table.layer == "output") & (table.epoch == 1)].iloc[0]
    assert traj[1]["R"] == out.R and traj[1]["test_error"] == summary["test_error"]
    assert "output R by epoch: 0:" in format_summary(summary)
    # Re-running the same config re-uses the finished run and leaves the table as it was.
    run(cfg, tmp_path)
    pd.testing.assert_frame_equal(load_track(tmp_path / "train" / "track.csv")[0], table,
                                  check_exact=True)


def _direct(out, stage, cfg=TINY) -> SensitivityResult:
    """``measure`` called on the demo's checkpoint, with the demo's probes and settings."""
    model, _, _ = load_checkpoint(out / "train" / "checkpoints" / f"{stage}.pt")
    x = load_dataset(DataConfig(name=cfg.data, seed=cfg.seed)).x_test[: cfg.n_probes]
    return measure(model, x, layers="all", perturbation=cfg.perturbation,
                   n_probes=cfg.n_probes, seed=cfg.seed, device=cfg.device)


def test_demo_is_a_run_whose_tables_are_measure_on_its_checkpoints(demo_dir):
    done = json.loads((demo_dir / "done").read_text())
    assert done["hash"] == run_config(TINY).hash() and done["stages"] == ["init", "trained"]
    for stage, ckpt in (("init", "init"), ("trained", "last")):
        table = SensitivityResult.load(demo_dir / f"sensitivity_{stage}.csv")
        pd.testing.assert_frame_equal(table.to_frame(), _direct(demo_dir, ckpt).to_frame(),
                                      check_exact=True)
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert summary["test_error"] == done["test_error"]
    trained = SensitivityResult.load(demo_dir / "sensitivity_trained.csv").to_frame(view="full")
    assert summary["layers"]["output"]["R_trained"] == trained.R.iloc[-1]


def test_demo_refuses_a_folder_of_another_config(demo_dir, tmp_path):
    out = tmp_path / "demo"
    shutil.copytree(demo_dir, out)
    with pytest.raises(ValueError, match="another config"):
        run(DemoConfig(**{**TINY.__dict__, "n_probes": 12}), out)


def test_a_demo_folder_written_before_the_demo_was_a_run_resumes(demo_dir, tmp_path):
    """The old demo wrote ``train/``, tables naming no run and ``summary.json``, no
    ``run_config.json`` or ``done``: the training is re-used, the tables measured again."""
    out = tmp_path / "old"
    shutil.copytree(demo_dir, out)
    for name in ("done", "run_config.json", "attempts.json"):
        (out / name).unlink()
    for stage, ckpt in (("init", "init"), ("trained", "last")):  # as the old demo saved them
        old = _direct(out, ckpt)
        old.config.pop("run", None)
        old.save(out / f"sensitivity_{stage}.csv")
    kept = [p for p in (out / "train").rglob("*") if p.suffix in (".pt", ".csv")]
    assert len(kept) >= 4  # init.pt, last.pt, best.pt, track.csv
    stamps = [p.stat().st_mtime_ns for p in kept]
    metrics = (out / "train" / "metrics.jsonl").read_text()
    run(TINY, out)
    # Training and tracking re-used, not redone (train rewrites its metrics, unchanged).
    assert stamps == [p.stat().st_mtime_ns for p in kept]
    assert (out / "train" / "metrics.jsonl").read_text() == metrics
    assert json.loads((out / "done").read_text())["hash"] == run_config(TINY).hash()
    for stage in ("init", "trained"):
        new = SensitivityResult.load(out / f"sensitivity_{stage}.csv")
        assert new.config["run"] == run_config(TINY).hash()
        pd.testing.assert_frame_equal(
            new.to_frame(), SensitivityResult.load(demo_dir / f"sensitivity_{stage}.csv")
            .to_frame(), check_exact=True)
