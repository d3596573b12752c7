"""The demo experiment: trains, measures init vs trained, and tracks every epoch."""

from __future__ import annotations

import pandas as pd

from diffeosense.experiments.demo import DemoConfig, format_summary, run
from diffeosense.tracking import load_track


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
