"""Tests of diffeosense.tracking: schedules, invisibility to training, agreement with measure,
kill and resume, clear errors, TensorBoard and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from _tables import assert_tampering_refused

import diffeosense.tracking as TR
from diffeosense.cli import main
from diffeosense.data import DataConfig
from diffeosense.models import create_model
from diffeosense.sensitivity import measure
from diffeosense.tracking import (
    TRACK_COLUMNS,
    SensitivityTracker,
    TrackConfig,
    load_track,
    parse_schedule,
)
from diffeosense.train import TrainConfig, fit, load_checkpoint


def _blobs(n: int, seed: int):
    """1x16x16 images: a bright left half (class 0) or right half (class 1) under noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 16, 16, generator=g)
    x[y == 0, :, :, :8] += 1.0
    x[y == 1, :, :, 8:] += 1.0
    return x, y


def _dropout_bn_net(seed: int = 0) -> nn.Module:
    """Conv + BatchNorm (running statistics) + dropout (global RNG): what tracking could
    disturb."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(6 * 64, 2),
        )  # fmt: skip


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


X, Y = _blobs(256, 0)
XT, YT = _blobs(64, 1)
CFG = TrainConfig(epochs=3, batch_size=32, lr=0.05, data=DataConfig(noise=0.3, augment=True))
TRACK = TrackConfig("every:1", n_probes=24, batch_size=10)


def _load(path) -> nn.Module:
    return load_checkpoint(path, _dropout_bn_net())[0]


def _strip(history):
    return [{k: v for k, v in m.items() if k != "time"} for m in history]


# ------------------------------------------------------------------ schedules
def test_schedules():
    assert parse_schedule("log").epochs_for(10) == [0, 1, 2, 4, 8, 10]
    assert parse_schedule("log").epochs_for(8) == [0, 1, 2, 4, 8]
    assert parse_schedule("log").epochs_for(0) == [0]
    assert parse_schedule("every:3").epochs_for(7) == [0, 3, 6, 7]
    assert parse_schedule("every:1").epochs_for(3) == [0, 1, 2, 3]
    assert parse_schedule("0,1,2,4").epochs_for(3) == [0, 1, 2]
    assert parse_schedule([4, 2, 2]).epochs == (2, 4)
    assert str(parse_schedule(" 2, 0 ")) == "0,2" and str(parse_schedule("EVERY:4")) == "every:4"
    # every/log always end on the epoch training stops at; an explicit list never adds it.
    assert parse_schedule("log").includes(5, 10, final=True)
    assert not parse_schedule("log").includes(5, 10)
    assert not parse_schedule("1,2").includes(5, 10, final=True)
    for bad in ["every:0", "every:", "logs", "1,,x", "", "1;2", [-1, 2], ["a"]]:
        with pytest.raises(ValueError, match="every:K"):
            parse_schedule(bad)


def test_config_errors():
    with pytest.raises(ValueError, match="n_probes"):
        TrackConfig(n_probes=1)
    with pytest.raises(ValueError, match="format"):
        TrackConfig(format="xlsx")
    with pytest.raises(ValueError, match="TrackConfig.n_probes must be int"):
        TrackConfig(n_probes="10")
    with pytest.raises(ValueError, match="predicate"):
        TrackConfig(layers=lambda layer: True)
    assert TrackConfig([0, 2]).schedule == "0,2"
    assert TrackConfig.from_dict(TRACK.to_dict()) == TRACK
    tracker = SensitivityTracker(TrackConfig("0,5", n_probes=8))
    net = _dropout_bn_net()
    with pytest.raises(ValueError, match="epoch 5 but the run has 3 epochs"):
        fit(net, (X, Y), (XT, YT), CFG, progress=False, tracker=tracker)


# ------------------------------------------------------------------ invisible to training
def test_tracked_training_is_bit_identical(tmp_path):
    """Weights (BatchNorm running statistics included), history and the global RNG of a run
    tracked at every epoch equal an untracked run's."""
    rng = torch.get_rng_state()
    ref = fit(_dropout_bn_net(), (X, Y), (XT, YT), CFG, tmp_path / "ref", progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    tracker = SensitivityTracker(TrackConfig("every:1", n_probes=24, batch_size=10,
                                             channels=True))
    res = fit(_dropout_bn_net(), (X, Y), (XT, YT), CFG, tmp_path / "tracked", progress=False,
              tracker=tracker)
    assert torch.equal(torch.get_rng_state(), rng)
    assert tracker.tracked_epochs == [0, 1, 2, 3]
    assert _states_equal(res.model, ref.model)
    assert _strip(res.history) == _strip(ref.history)
    for name in ("init.pt", "epoch_0001.pt", "last.pt"):
        a = _load(tmp_path / "ref" / "checkpoints" / name)
        b = _load(tmp_path / "tracked" / "checkpoints" / name)
        assert _states_equal(a, b), name
    # Training actually moved the weights, so the comparison above is not vacuous.
    assert not _states_equal(res.model, _load(tmp_path / "ref" / "checkpoints" / "init.pt"))
    assert set(tracker.table.view) == {"full", "channel-mean"}


def test_model_modes_are_restored():
    """A submodule the user froze in eval mode stays so through the tracker's measurements."""
    net = _dropout_bn_net()
    net[1].eval()
    tracker = SensitivityTracker(TRACK)
    fit(net, (X, Y), (XT, YT), TrainConfig(epochs=0), progress=False, tracker=tracker)
    assert net.training and not net[1].training and net[5].training
    assert tracker.tracked_epochs == [0]


# ------------------------------------------------------------------ agreement with measure
def test_rows_equal_measure_on_checkpoints(tmp_path):
    out = tmp_path / "run"
    tracker = SensitivityTracker(TrackConfig("log", n_probes=24, batch_size=10,
                                             layers="conv+activation"))
    res = fit(_dropout_bn_net(), (X, Y), (XT, YT), CFG, out, progress=False, tracker=tracker)
    table, meta = load_track(out / "track.csv")
    assert sorted(table.epoch.unique()) == [0, 1, 2, 3]  # log: 0, 1, 2 and the last (3)
    assert meta["format"] == TR.TRACK_FORMAT and meta["config"] == tracker.config.to_dict()
    assert meta["probes"] == {"split": "test", "n": 24, "first": 0, "noise": 0.3}
    # The probes: the first 24 test images, corrupted once by the test noise (s = 0.3).
    d = (tracker.probes - XT[:24]).flatten(1).norm(dim=1)
    assert torch.allclose(d, torch.full((24,), 0.3), atol=1e-5)
    for epoch, ck in ((0, "init.pt"), (3, "last.pt")):
        model = _load(out / "checkpoints" / ck)
        ref = measure(model, tracker.probes, layers="conv+activation", n_probes=24,
                      batch_size=10, seed=0).to_frame("full")
        rows = table[table.epoch == epoch].reset_index(drop=True)
        assert list(rows.layer) == list(ref.layer)
        for q in ("D", "G", "R", "D_se", "G_se", "R_se"):
            torch.testing.assert_close(torch.tensor(rows[q].to_numpy()),
                                       torch.tensor(ref[q].to_numpy()), rtol=1e-6, atol=0)
    # The epoch's errors are those of the run's history; at epoch 0 the initial test error.
    last = table[table.epoch == 3].iloc[0]
    assert last.train_error == res.history[-1]["train_error"]
    assert last.test_error == res.history[-1]["test_error"]
    first = table[table.epoch == 0].iloc[0]
    assert pd.isna(first.train_error) and 0.0 <= first.test_error <= 1.0
    # Same diffeos and noise every epoch: the input layer's D, G are identical at all epochs.
    inp = table[table.layer == "input"]
    assert inp.D.nunique() == 1 and inp.G.nunique() == 1
    # ... while training changed the output's sensitivities.
    out_rows = table[table.layer == "output"].set_index("epoch")
    assert out_rows.loc[0, "D"] != out_rows.loc[3, "D"]


# ------------------------------------------------------------------ kill and resume
class _CrashInTraining(nn.Module):
    """Wraps a net; raises KeyboardInterrupt at training forward call ``at`` (a crash)."""

    def __init__(self, net: nn.Module, at: int):
        super().__init__()
        self.net, self.at, self.calls = net, at, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        return self.net(x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    tracker = SensitivityTracker(TRACK)
    fit(_CrashInTraining(_dropout_bn_net(), 0), (X, Y), (XT, YT), CFG, out, progress=False,
        tracker=tracker)
    return load_track(out / "track.csv")[0]


# 8 training batches per epoch: forward call 12 is inside epoch 2. The tracker's own crash
# points: while measuring epoch 2 (its checkpoint committed, no row yet) and at each of the three
# writes of epoch 2's table (write_table two_phase: the sidecar naming the pending table, the
# table, the final sidecar). every:1 writes at epochs 0, 1, 2, 3: epoch 2's writes are the 3rd.
@pytest.mark.parametrize("where", ["training@12", "measure@2", "pending@2", "table@2",
                                   "sidecar@2", "measure@0"])
def test_interrupt_and_resume_gives_the_same_table(tmp_path, monkeypatch, reference, where):
    out = tmp_path / "run"
    kind, at = where.split("@")
    at = int(at)
    net = _CrashInTraining(_dropout_bn_net(), at if kind == "training" else 0)
    tracker = SensitivityTracker(TRACK)
    real_measure, real_write = SensitivityTracker.measure, TR._io.write_bytes
    calls, writes = [], {"pending": 0, "table": 0, "sidecar": 0}

    def crashing_measure(self, model):
        calls.append(1)
        if len(calls) == at + 1:  # every:1 measures epochs 0, 1, 2, ... in turn
            raise KeyboardInterrupt
        return real_measure(self, model)

    def crashing_write(path, data):
        path = Path(path)
        if path.name in ("track.csv", "track.meta.json"):
            w = ("table" if path.name == "track.csv" else
                 "pending" if b'"pending_table"' in data else "sidecar")
            writes[w] += 1
            if w == kind and writes[w] == at + 1:
                raise KeyboardInterrupt
        return real_write(path, data)

    if kind == "measure":
        monkeypatch.setattr(SensitivityTracker, "measure", crashing_measure)
    elif kind in writes:
        monkeypatch.setattr(TR._io.atomic, "write_bytes", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        fit(net, (X, Y), (XT, YT), CFG, out, progress=False, tracker=tracker)
    monkeypatch.undo()
    committed = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert committed == (1 if kind == "training" else at)
    if (out / "track.csv").exists():
        # The table read back is one its sidecar vouches for: before epoch 2, or (killed
        # before the final sidecar) with epoch 2, the pending table that write meant.
        table, meta = load_track(out / "track.csv")
        assert table.epoch.max() == (2 if kind == "sidecar" else 1)
        assert ("pending_table" in meta) == (kind in ("table", "sidecar"))
    tracker = SensitivityTracker(TRACK)
    fit(_CrashInTraining(_dropout_bn_net(), 0), (X, Y), (XT, YT), CFG, out, resume=True,
        progress=False, tracker=tracker)
    table, meta = load_track(out / "track.csv")
    pd.testing.assert_frame_equal(table, reference, check_exact=True)
    assert not table.duplicated(["epoch", "layer", "view"]).any()
    assert "pending_table" not in meta and meta["table"]["rows"] == len(table)


def test_sigkill_and_resume_gives_the_same_table(tmp_path, reference):
    """A real SIGKILL, sent by the training process to itself at a point the test picks: after
    epoch 2's checkpoint and in the middle of its measurement."""
    out = tmp_path / "run"
    script = (
        "import os, signal, sys, torch\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "torch.set_num_threads(int(sys.argv[3]))\n"
        "import test_tracking as tt\n"
        "from diffeosense.tracking import SensitivityTracker\n"
        "real = SensitivityTracker.measure\n"
        "calls = []\n"
        "def measure(self, model):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(self, model)\n"
        "SensitivityTracker.measure = measure\n"
        "net = tt._CrashInTraining(tt._dropout_bn_net(), 0)\n"
        "tt.fit(net, (tt.X, tt.Y), (tt.XT, tt.YT), tt.CFG, sys.argv[1], progress=False,\n"
        "       tracker=SensitivityTracker(tt.TRACK))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out), os.path.dirname(__file__),
         str(torch.get_num_threads())], capture_output=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert load_track(out / "track.csv")[0].epoch.max() == 1
    fit(_CrashInTraining(_dropout_bn_net(), 0), (X, Y), (XT, YT), CFG, out, resume=True,
        progress=False, tracker=SensitivityTracker(TRACK))
    pd.testing.assert_frame_equal(load_track(out / "track.csv")[0], reference, check_exact=True)


def test_resume_refuses_another_tracking_config(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg, out, progress=False,
        tracker=SensitivityTracker(TRACK))
    cfg2 = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    other = TrackConfig("every:1", n_probes=30, batch_size=10)
    with pytest.raises(ValueError, match="same --track-\\* options"):
        fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg2, out, resume=True, progress=False,
            tracker=SensitivityTracker(other))


def test_tracking_added_on_resume_backfills_from_kept_checkpoints(tmp_path):
    """A run trained untracked for 2 epochs, then resumed with tracking: epochs 0 and 1 come
    from init.pt and epoch_0001.pt, epoch 2 from the model; then it goes on."""
    out = tmp_path / "run"
    cfg2 = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="constant")
    fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg2, out, progress=False)
    tracker = SensitivityTracker(TRACK)
    fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg2, out, resume=True, progress=False,
        tracker=tracker)
    assert tracker.tracked_epochs == [0, 1, 2]
    ref = SensitivityTracker(TRACK)
    fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg2, tmp_path / "ref", progress=False, tracker=ref)
    pd.testing.assert_frame_equal(tracker.table, ref.table, check_exact=True)


# ------------------------------------------------------------------ formats and logging
def test_parquet_table_round_trips(tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "run"
    tracker = SensitivityTracker(TrackConfig("0,1", n_probes=16, format="parquet"))
    fit(_dropout_bn_net(), (X, Y), (XT, YT), TrainConfig(epochs=1, batch_size=64, lr=0.05), out,
        progress=False, tracker=tracker)
    table, meta = load_track(out / "track.parquet")
    assert list(table.columns) == TRACK_COLUMNS and (out / "track.meta.json").exists()
    pd.testing.assert_frame_equal(table, tracker.table, check_exact=True)


def test_bad_tables_are_clear_errors(tmp_path):
    from diffeosense._io import write_table

    with pytest.raises(FileNotFoundError, match="no tracking table"):
        load_track(tmp_path / "track.csv")
    (tmp_path / "x.csv").write_text("layer,D\na,1\n")
    with pytest.raises(FileNotFoundError, match="x.csv has no sidecar x.meta.json"):
        load_track(tmp_path / "x.csv")
    write_table(tmp_path / "x.csv", pd.DataFrame({"layer": ["a"], "D": [1.0]}), {})
    with pytest.raises(ValueError, match="not a diffeosense tracking table"):
        load_track(tmp_path / "x.csv")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_changed_after_writing_are_refused(tmp_path, fmt):
    """A truncated or edited track table is refused, naming it: by load_track (the plots,
    the CLI) and by a resumed run, which would otherwise continue from damaged rows."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)
    track = TrackConfig("0,1", n_probes=16, format=fmt)
    tracker = SensitivityTracker(track)
    fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg, out, progress=False, tracker=tracker)
    path = out / f"track.{fmt}"

    def resume(p):
        fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg, out, resume=True, progress=False,
            tracker=SensitivityTracker(track))

    table, meta = assert_tampering_refused(path, load_track)
    pd.testing.assert_frame_equal(table, tracker.table, check_exact=True)
    assert meta["table"] == {**meta["table"], "file": path.name, "rows": len(table)}
    assert meta["config"] == track.to_dict() and "provenance" in meta
    assert_tampering_refused(path, resume)
    pd.testing.assert_frame_equal(load_track(path)[0], tracker.table, check_exact=True)


def test_tables_from_before_table_records_are_read_with_a_warning(tmp_path):
    """A track.csv whose sidecar predates the table record (format /1, as published in
    docs/results) is read with a warning, never refused (it may hold a long run) and never
    silently; a resumed run rewrites it checked. A current sidecar without a record is an
    error."""
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)
    track = TrackConfig("0,1", n_probes=16)
    tracker = SensitivityTracker(track)
    fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg, out, progress=False, tracker=tracker)
    side = out / "track.meta.json"
    meta = json.loads(side.read_text())
    assert meta["format"] == TR.TRACK_FORMAT == "diffeosense.track/2"
    del meta["table"]
    side.write_text(json.dumps({**meta, "format": "diffeosense.track/1"}))
    with pytest.warns(UserWarning, match=r"track.csv was written before .* read unchecked"):
        old, old_meta = load_track(out / "track.csv")
    pd.testing.assert_frame_equal(old, tracker.table, check_exact=True)
    assert old_meta["format"] == "diffeosense.track/1"
    with pytest.warns(UserWarning, match="read unchecked"):
        fit(_dropout_bn_net(), (X, Y), (XT, YT), cfg, out, resume=True, progress=False,
            tracker=SensitivityTracker(track))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked again: no warning
        table, meta = load_track(out / "track.csv")
    assert meta["format"] == TR.TRACK_FORMAT and meta["table"]["rows"] == len(table)
    pd.testing.assert_frame_equal(table, tracker.table, check_exact=True)
    del meta["table"]
    side.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="holds no table record"):
        load_track(out / "track.csv")


def test_missing_tensorboard_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'diffeosense\[tensorboard\]'"):
        SensitivityTracker(TRACK, tensorboard="tb")


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = SensitivityTracker(TrackConfig("0,2", n_probes=16, layers=["output"]),
                                 tensorboard=tmp_path / "tb")
    fit(_dropout_bn_net(), (X, Y), (XT, YT), TrainConfig(epochs=2, batch_size=64, lr=0.05),
        progress=False, tracker=tracker)
    tracker.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"D/output", "G/output", "R/output", "error/test", "error/train"} <= tags
    r = acc.Scalars("R/output")
    assert [e.step for e in r] == [0, 2]
    table = tracker.table.set_index("epoch")
    assert r[1].value == pytest.approx(table.loc[2, "R"], rel=1e-6)


# ------------------------------------------------------------------ CLI
def test_cli_tracks_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "simplecnn", "--model-kw", "depth=1", "width=4", "--P", "256",
            "--epochs", "2", "--batch-size", "64", "--out", str(out), "--no-progress",
            "--track-sensitivity", "every:2", "--track-probes", "12",
            "--track-layers", "conv+activation"]
    assert main(args) == 0
    assert "tracked at epochs [0, 2]" in capsys.readouterr().out
    table, meta = load_track(out / "track.csv")
    assert sorted(table.epoch.unique()) == [0, 2] and set(table.n_probes) == {12}
    assert meta["config"]["layers"] == "conv+activation"
    assert main(["plot", str(out), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 1000
    # Resuming a finished run leaves the table as it was (no duplicates).
    before = (out / "track.csv").read_bytes()
    assert main(args + ["--resume"]) == 0
    assert (out / "track.csv").read_bytes() == before
    capsys.readouterr()
    assert main(args[:-6] + ["--track-probes", "12"]) == 2
    assert "given without --track-sensitivity" in capsys.readouterr().err
    assert main(args + ["--resume", "--log", "wandb", "x"]) == 2
    assert "tensorboard DIR" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r2"), "--track-sensitivity", "every:x"]) == 2
    assert "every:K" in capsys.readouterr().err


def test_cli_tensorboard_missing_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    rc = main(["train", "--epochs", "1", "--out", str(tmp_path / "r"), "--track-sensitivity",
               "log", "--log", "tensorboard", str(tmp_path / "tb")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pip install 'diffeosense[tensorboard]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before training started


def test_simplecnn_demo_model_layers_are_tracked():
    """All layers of the demo's model (fx taps) land in the table, in forward order."""
    net = create_model("simplecnn", in_channels=1, num_classes=2, depth=2, width=4,
                       batch_norm=True, image_size=16)
    tracker = SensitivityTracker(TrackConfig("0", n_probes=8))
    fit(net, (X, Y), (XT, YT), TrainConfig(epochs=0), progress=False, tracker=tracker)
    t = tracker.table
    assert t.layer.iloc[0] == "input" and t.layer.iloc[-1] == "output"
    assert list(t.depth) == sorted(t.depth) and len(t) > 6
    assert json.loads(t.to_json())  # plain values only


def test_early_stop_is_tracked_as_the_last_epoch():
    """every:K and log end on the epoch training stops at, here an early stop at zero loss;
    without a test set the probes come from the training split."""
    x, y = X, 2.0 * Y.float() - 1.0
    cfg = TrainConfig(epochs=100, batch_size=32, lr=0.05, loss="hinge", schedule="constant",
                      weight_decay=0.0, stop_at_zero_loss=True)  # fmt: skip
    net = create_model("simplecnn", in_channels=1, num_classes=1, depth=1, width=8)
    tracker = SensitivityTracker(TrackConfig("every:50", n_probes=12, layers=["output"]))
    res = fit(net, (x, y), None, cfg, progress=False, tracker=tracker)
    last = res.history[-1]["epoch"]
    assert res.stopped == "zero_loss" and last < 50
    assert tracker.tracked_epochs == [0, last]
    assert torch.equal(tracker.probes, X[:12])
    assert tracker.table.test_error.isna().all() and tracker.table.train_error.notna().iloc[-1]


@pytest.mark.parametrize("track, words", [
    (["--track-sensitivity", "0,5"], "asks for epoch 5 but the run has 2 epochs"),
    (["--track-sensitivity", "0,1", "--track-layers", "nosuch"], "unknown layer kind"),
    (["--track-sensitivity", "log", "--track-layers", "conv,nosuch.layer"], "nosuch.layer"),
], ids=["schedule", "layer-kind", "layer-name"])
def test_bad_tracking_options_are_refused_before_the_run_folder(tmp_path, capsys, track,
                                                                words):
    """Refused before config.json and the checkpoints are written, so that the corrected
    command then runs (it is not refused as 'already holds a run')."""
    out = tmp_path / "run"
    base = ["train", "--model", "simplecnn", "--model-kw", "depth=1", "width=4", "--P", "64",
            "--epochs", "2", "--batch-size", "32", "--out", str(out), "--no-progress"]
    assert main(base + track) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert main(base + ["--track-sensitivity", "0,1", "--track-probes", "8"]) == 0
