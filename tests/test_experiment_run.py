"""The run unit: a pure function of its config that composes train and measure.

Checked: a run writes its tables and the ``done`` marker into its hash folder; its init-stage
table equals ``measure`` on the seeded initialization computed independently (the unit adds no
computation of its own); a finished run is not re-run (attempt counter, marker untouched);
``probe_noise`` corrupts the probes (the trained net's table changes, the sidecar says so) by
``measure``'s own ``probe_noise`` (the same table as calling it directly);
validation refuses unknown keys, measure options and stages; the folder hash ignores where a
run executes and follows what it computes.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from diffeosense.data import DataConfig, load_dataset
from diffeosense.experiments.run import RunConfig, load_run, run, run_dir, run_in, run_status
from diffeosense.sensitivity import measure
from diffeosense.train import TrainConfig, build_model


def tiny(**kw) -> RunConfig:
    train = TrainConfig(model="simplecnn", model_kwargs={"depth": 1, "width": 4},
                        data=DataConfig(P=200), epochs=1, batch_size=50, lr=0.05,
                        eval_batch_size=500)
    kw = {"layers": "all", "n_probes": 20, "measure_kwargs": {"batch_size": 10}, **kw}
    return RunConfig(train=train, **kw)


def test_run_writes_tables_and_done_and_init_equals_direct_measure(tmp_path):
    cfg = tiny()
    folder = run_dir(cfg, tmp_path)
    assert run_status(folder) == "new"
    assert run(cfg, tmp_path) == folder
    assert run_status(folder) == "done"
    done = json.loads((folder / "done").read_text())
    assert done["hash"] == cfg.hash() == folder.name and done["stages"] == ["init", "trained"]
    r = load_run(folder)
    assert r["config"] == cfg
    init, trained = r["tables"]["init"], r["tables"]["trained"]
    assert init.config["stage"] == "init" and init.config["epoch"] == 0
    assert trained.config["epoch"] == 1 and trained.config["run"] == cfg.hash()

    # Independently: the seeded initialization and the same probes through measure().
    data = load_dataset(cfg.train.data)
    model, _ = build_model(cfg.train, data)
    ref = measure(model, data.x_test[:20], layers="all", n_probes=20, seed=0, batch_size=10)
    a, b = init.to_frame(), ref.to_frame()
    assert list(a.layer) == list(b.layer)
    np.testing.assert_allclose(a[["D", "G", "R"]].to_numpy(), b[["D", "G", "R"]].to_numpy(),
                               rtol=1e-5)
    # Training moved the weights: the trained table differs from the init one.
    assert not np.allclose(trained.to_frame().D, a.D, rtol=1e-3)


def test_finished_run_is_not_rerun(tmp_path):
    cfg = tiny(stages=["init"])
    folder = run(cfg, tmp_path)
    stamp = (folder / "done").stat().st_mtime_ns
    table = (folder / "sensitivity_init.csv").stat().st_mtime_ns
    run(cfg, tmp_path)
    assert json.loads((folder / "attempts.json").read_text())["attempts"] == 1
    assert (folder / "done").stat().st_mtime_ns == stamp
    assert (folder / "sensitivity_init.csv").stat().st_mtime_ns == table


def test_probe_noise_changes_the_probes(tmp_path):
    clean = load_run(run(tiny(stages=["trained"], layers="output"), tmp_path))
    noisy_cfg = tiny(stages=["trained"], layers="output", probe_noise=3.0)
    noisy = load_run(run(noisy_cfg, tmp_path))
    a, b = clean["tables"]["trained"], noisy["tables"]["trained"]
    assert b.config["probe_noise"] == 3.0 and a.config["probe_noise"] == 0.0
    # The same trained weights (same train config) ...
    assert clean["done"]["test_error"] == noisy["done"]["test_error"]
    # ... measured on other probes: deforming a norm-3 corruption of unit-variance 28x28
    # images moves the noise too, so D changes well beyond rounding (G, with white noise on
    # a nearly linear 1-epoch net, hardly depends on the probes).
    da, db = a.to_frame().iloc[-1].D, b.to_frame().iloc[-1].D
    assert abs(da - db) > 0.1 * da
    # One mechanism: the table is measure(probe_noise=3) on the same weights and clean probes.
    from diffeosense.train import load_checkpoint

    model, _, _ = load_checkpoint(run_dir(noisy_cfg, tmp_path) / "train/checkpoints/last.pt")
    x = load_dataset(noisy_cfg.train.data).x_test[:20]
    ref = measure(model, x, layers="output", n_probes=20, seed=0, batch_size=10,
                  probe_noise=3.0)
    np.testing.assert_allclose(b.to_frame()[["D", "G", "R"]].to_numpy(),
                               ref.to_frame()[["D", "G", "R"]].to_numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="probe_noise are RunConfig fields"):
        tiny(measure_kwargs={"probe_noise": 1.0})
    # "train": the training noise norm.
    cfg = tiny(probe_noise="train")
    cfg.train.data.noise = 0.7
    assert cfg.probe_noise_value == 0.7


def test_validation_refuses_bad_configs():
    d = tiny().to_dict()
    with pytest.raises(ValueError, match="unknown RunConfig keys.*lyers"):
        RunConfig.from_dict({**d, "lyers": "all"})
    with pytest.raises(ValueError, match="unknown TrainConfig keys.*epoch"):
        RunConfig.from_dict({**d, "train": {**d["train"], "epoch": 3}})
    with pytest.raises(ValueError, match="unknown DataConfig keys.*noize"):
        RunConfig.from_dict({**d, "train": {**d["train"], "data": {"noize": 1.0}}})
    with pytest.raises(ValueError, match="unknown measure_kwargs.*statistc"):
        tiny(measure_kwargs={"statistc": "median"})
    with pytest.raises(ValueError, match="measure_kwargs.*seed"):
        tiny(measure_kwargs={"seed": 3})  # a RunConfig field: set it there
    with pytest.raises(ValueError, match="unknown measure_kwargs.*config"):
        tiny(measure_kwargs={"config": {"statistic": "median"}})  # not JSON of a MeasureConfig
    with pytest.raises(ValueError, match="stages"):
        tiny(stages=["final"])
    with pytest.raises(ValueError, match="probe_noise"):
        tiny(probe_noise="test")
    with pytest.raises(ValueError, match="probe_noise"):
        tiny(probe_noise=-1.0)


def test_hash_ignores_where_a_run_executes():
    a = tiny()
    b = RunConfig.from_dict(a.to_dict())
    b.train.device, b.train.data.root = "auto", "/somewhere/else"
    assert a.hash() == b.hash()
    for change in ({"seed": 1}, {"n_probes": 30}, {"layers": "output"}, {"channels": True}):
        assert RunConfig.from_dict({**a.to_dict(), **change}).hash() != a.hash()
    c = RunConfig.from_dict(a.to_dict())
    c.train.data.noise = 0.5
    assert c.hash() != a.hash()
    # Fields added later are left out of the hash at their defaults: the folders of runs made
    # before them are still found (hashes written by diffeosense at f6e80bb).
    assert (tiny().hash(), tiny(channels=True, n_probes=20).hash()) == \
        ("72ae71510797", "441db1d25970")
    assert tiny(channels=True, views=["full", "channel-mean"]).hash() != \
        tiny(channels=True).hash()
    with pytest.raises(ValueError, match="views"):
        tiny(views=["channel-mean"])  # needs channels=True


def test_fields_added_later_keep_the_old_hashes(tmp_path):
    """Folders written before ``probe_order``, ``views`` and ``n_probes=None`` existed keep
    their names: the hashes below were computed before those fields (at their defaults) were
    added; a value other than the default names another folder."""
    assert tiny().hash() == "72ae71510797"
    assert tiny(probe_order="balanced").hash() == "5c43190d0b4b"
    assert tiny(views=None).hash() == tiny().hash()
    assert RunConfig.from_dict({k: v for k, v in tiny().to_dict().items()
                                if k not in ("views", "probe_order")}).hash() == "72ae71510797"
    assert tiny(channels=True, views=["full", "channel-mean"]).hash() != \
        tiny(channels=True).hash()
    assert tiny(n_probes=None).hash() not in (tiny().hash(), "72ae71510797")
    with pytest.raises(ValueError, match="need channels=True"):
        tiny(views=["channel-mean"])
    with pytest.raises(ValueError, match="views must be distinct names"):
        tiny(channels=True, views=["full", "spatial"])
    with pytest.raises(ValueError, match="n_probes must be >= 2"):
        tiny(n_probes=1)


def test_views_keep_their_rows_and_n_probes_none_takes_the_split(tmp_path):
    """``views`` drops the other rows of the very table measured with all of them;
    ``n_probes=None`` measures every probe of the split (the same as naming that number)."""
    cfg = tiny(stages=["init"], channels=True, views=["full", "channel-mean"])
    kept = load_run(run(cfg, tmp_path))["tables"]["init"].to_frame()
    every = load_run(run(tiny(stages=["init"], channels=True), tmp_path))["tables"]["init"]
    every = every.to_frame()
    assert set(every.view) == {"full", "channel", "channel-mean"}
    assert set(kept.view) == {"full", "channel-mean"}
    pd.testing.assert_frame_equal(
        kept, every[every.view != "channel"].reset_index(drop=True), check_exact=True)
    n_test = len(load_dataset(tiny().train.data).x_test)
    a = load_run(run(tiny(stages=["init"], n_probes=None), tmp_path))["tables"]["init"]
    b = load_run(run(tiny(stages=["init"], n_probes=n_test), tmp_path))["tables"]["init"]
    assert int(a.to_frame().n_probes.iloc[0]) == n_test
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame(), check_exact=True)


def test_shuffled_copies_are_measured_on_the_same_probes(tmp_path):
    """Copy k is pooling.shuffle_channels of the stage's weights with copy k's seed (as in
    pooling_report), measured with the same probes, diffeos and noise: its table equals
    measure() on that twin; the input row is the same for every copy; the convolutions see a
    different net (depth 2: the second convolution has 4 input channels to permute)."""
    import torch

    from diffeosense.pooling import _shuffle_seed, shuffle_channels
    from diffeosense.train import load_checkpoint

    cfg = tiny(stages=["trained"], shuffled=2)
    cfg.train.model_kwargs = {"depth": 2, "width": 4}
    folder = run(cfg, tmp_path)
    r = load_run(folder)
    assert list(r["tables"]) == ["trained", "trained_shuffled0", "trained_shuffled1"]
    assert [t.config["copy"] for t in r["tables"].values()] == [-1, 0, 1]
    model, _, _ = load_checkpoint(folder / "train" / "checkpoints" / "last.pt")
    x = load_dataset(cfg.train.data).x_test[:20]
    twin = shuffle_channels(model, generator=torch.Generator().manual_seed(_shuffle_seed(0, 1)))
    ref = measure(twin, x, layers="all", n_probes=20, seed=0, batch_size=10).to_frame()
    got = r["tables"]["trained_shuffled1"].to_frame()
    np.testing.assert_allclose(got[["D", "G", "R"]].to_numpy(), ref[["D", "G", "R"]].to_numpy(),
                               rtol=1e-5)
    orig = r["tables"]["trained"].to_frame().set_index("layer")
    got = got.set_index("layer")
    assert orig.loc["input", "D"] == got.loc["input", "D"]
    assert not np.allclose(orig.loc["output", "G"], got.loc["output", "G"], rtol=1e-3)
    # Adding copies later does not rename existing folders: shuffled=0 is hash-neutral.
    assert tiny().hash() == RunConfig.from_dict({**tiny().to_dict(), "shuffled": 0}).hash()
    assert tiny(shuffled=1).hash() != tiny().hash()
    with pytest.raises(ValueError, match="shuffled"):
        tiny(shuffled=-1)


def test_existing_configs_keep_their_hash():
    """Fields added later (``probe_order``, ``track``) are left out of the hash at their
    defaults: the folders of sweeps run before them are still found. Pinned on 9e26e98."""
    assert tiny().hash() == "72ae71510797"
    assert tiny(probe_order="balanced").hash() == "5c43190d0b4b"
    assert RunConfig.from_dict({**tiny().to_dict(), "track": None}).hash() == "72ae71510797"
    assert tiny(track={"schedule": "every:1"}).hash() != tiny().hash()


def test_track_writes_the_table_of_a_tracked_train(tmp_path):
    """``track`` hands ``train`` a tracker: ``train/track.csv`` is the table of a tracked
    ``train()`` call with the same TrackConfig, bit for bit."""
    import pandas as pd

    from diffeosense.tracking import SensitivityTracker, TrackConfig, load_track
    from diffeosense.train import train

    cfg = tiny(stages=["init"], track={"schedule": "every:1", "n_probes": 8, "seed": 3})
    assert cfg.track == dataclasses.asdict(TrackConfig(schedule="every:1", n_probes=8, seed=3))
    folder = run(cfg, tmp_path / "sweep")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    tracker = SensitivityTracker(TrackConfig(schedule="every:1", n_probes=8, seed=3))
    train(cfg.train, tmp_path / "direct", tracker=tracker)
    got, meta = load_track(folder / "train" / "track.csv")
    want, _ = load_track(tmp_path / "direct" / "track.csv")
    assert sorted(got.epoch.unique()) == [0, 1] and meta["config"]["seed"] == 3
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert not (run(tiny(stages=["init"]), tmp_path / "sweep") / "train" / "track.csv").exists()
    with pytest.raises(ValueError, match="TrackConfig fields"):
        tiny(track={"schedul": "every:1"})


def test_run_in_refuses_a_folder_of_another_config(tmp_path):
    cfg = tiny(stages=["init"])
    assert run_in(cfg, tmp_path / "mine") == tmp_path / "mine"
    assert (tmp_path / "mine" / "done").is_file()
    run_in(cfg, tmp_path / "mine")  # the same config: the finished run is re-used
    assert json.loads((tmp_path / "mine" / "attempts.json").read_text())["attempts"] == 1
    with pytest.raises(ValueError, match="another config"):
        run_in(tiny(stages=["init"], seed=1), tmp_path / "mine")
