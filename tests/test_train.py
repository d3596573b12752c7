"""Tests of diffeosense.train: learning, exact resumption after a kill, clear errors."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn as nn

import diffeosense.train as T
from diffeosense.data import DataConfig
from diffeosense.models import create_model
from diffeosense.train import TrainConfig, fit, load_checkpoint, train


def _blobs(n: int, seed: int, hinge: bool = False):
    """1x8x8 images: a bright left half (class 0) or right half (class 1) under noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    x[y == 0, :, :, :4] += 1.0
    x[y == 1, :, :, 4:] += 1.0
    return x, (2.0 * y - 1.0 if hinge else y)


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


TINY = dict(
    model="simplecnn", model_kwargs={"depth": 2, "width": 16},
    data=DataConfig("mnist-embedded", P=1024, augment=True, noise=0.5),
    epochs=3, batch_size=32,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One uninterrupted run of the tiny config (shared by several tests)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    res = train(TrainConfig(**TINY), out, progress=False)
    return out, res


def test_learns_synthetic_task():
    x, y = _blobs(512, 0)
    xt, yt = _blobs(256, 1)
    net = create_model("simplecnn", in_channels=1, num_classes=2, depth=2, width=8)
    cfg = TrainConfig(epochs=6, batch_size=32, lr=0.05)
    res = fit(net, (x, y), (xt, yt), cfg, progress=False)
    assert res.final["train_error"] < 0.05 and res.final["test_error"] < 0.05
    assert res.history[0]["train_loss"] > res.final["train_loss"]


def test_hinge_until_zero_loss():
    x, y = _blobs(256, 0, hinge=True)
    net = create_model("simplecnn", in_channels=1, num_classes=1, depth=1, width=8)
    cfg = TrainConfig(epochs=100, batch_size=32, lr=0.05, loss="hinge", schedule="constant",
                      weight_decay=0.0, stop_at_zero_loss=True)  # fmt: skip
    res = fit(net, (x, y), None, cfg, progress=False)
    assert res.stopped == "zero_loss" and len(res.history) < 100
    with torch.no_grad():
        margins = y * res.model.eval()(x)[:, 0]
    assert float(margins.min()) >= 1.0  # zero hinge loss on every training point


def test_recipe_defaults():
    assert TrainConfig(model="vgg11").optimizer_name == "sgd"
    assert TrainConfig(model="vgg11").lr_value == 0.1
    assert TrainConfig(model="vgg11").weight_decay_value == 5e-4
    fc = TrainConfig(model="fc4")
    assert (fc.optimizer_name, fc.lr_value, fc.weight_decay_value) == ("adam", 1e-3, 0.0)
    cfg = TrainConfig(epochs=4, lr=0.2)
    assert [cfg.lr_at(e) for e in (1, 3)] == [0.2, pytest.approx(0.1)]
    net = create_model("vgg11bn", in_channels=1)
    opt = T._make_optimizer(net, TrainConfig(model="vgg11bn"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in net.named_parameters():  # weights only: no biases, no BN parameters
        assert (id(p) in decayed) == (name.endswith("weight") and "bn" not in name), name
    with pytest.raises(ValueError):
        TrainConfig(optimizer="rmsprop")


def test_run_folder_and_determinism(tiny_run, tmp_path):
    out, res = tiny_run
    ck = out / "checkpoints"
    assert {p.name for p in ck.iterdir()} == {
        "init.pt", "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt", "best.pt", "last.pt"}
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    cfg = TrainConfig(**TINY)
    assert [m["lr"] for m in lines] == [cfg.lr_at(e) for e in (1, 2, 3)]
    for key in ("train_loss", "train_error", "test_loss", "test_error", "time"):
        assert key in lines[0]
    saved = json.loads((out / "config.json").read_text())
    assert TrainConfig.from_dict(saved["config"]) == cfg and "torch" in saved["provenance"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["best"]["epoch"] == res.best_epoch
    # the best checkpoint holds the epoch with the lowest test error
    best_epoch = min(lines, key=lambda m: m["test_error"])["epoch"]
    assert load_checkpoint(ck / "best.pt")[2]["epoch"] == best_epoch
    # same seed, same weights; another seed, other weights (one epoch is enough to tell)
    short = {**TINY, "epochs": 1, "data": DataConfig("mnist-embedded", P=128, noise=0.5)}
    a = train(TrainConfig(**short), None, progress=False).model
    b = train(TrainConfig(**short), None, progress=False).model
    c = train(TrainConfig(**short, seed=1), None, progress=False).model
    assert _states_equal(a, b) and not _states_equal(a, c)


def test_load_checkpoint_roundtrip(tiny_run):
    out, res = tiny_run
    model, cfg, info = load_checkpoint(out / "checkpoints" / "last.pt")
    assert _states_equal(model, res.model) and cfg == TrainConfig(**TINY)
    assert info["epoch"] == 3 and len(info["history"]) == 3 and "provenance" in info
    init, _, info0 = load_checkpoint(out / "checkpoints" / "init.pt")
    assert info0["epoch"] == 0 and not _states_equal(init, res.model)


_KILLER = """
import json, os, signal, sys, torch
torch.set_num_threads(int(sys.argv[2]))
import diffeosense._io.atomic as io_  # torch_save writes through it
import diffeosense.train as T
where = sys.argv[4]
calls = 0
real_loss, real_write = T._loss_and_errors, io_.atomic_write

def loss_then_die(out, y, loss):  # 32 training batches + 1 test batch per epoch
    global calls
    calls += 1
    if where == "mid-epoch" and calls == 33 + 16:  # the 16th batch of epoch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return real_loss(out, y, loss)

def write_then_die(path, write):
    if where == "mid-write" and path.name == "last.pt" and path.with_name(
            "epoch_0002.pt").exists():
        def half(f):  # half of epoch 2's last.pt reaches the temporary file, then the kill
            f.write(b"x" * 1000); f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(path, half)
    return real_write(path, write)

T._loss_and_errors, io_.atomic_write = loss_then_die, write_then_die
T.train(T.TrainConfig.from_dict(json.loads(sys.argv[3])), sys.argv[1], progress=False)
"""


@pytest.mark.parametrize("where", ["mid-epoch", "mid-write"])
def test_kill_and_resume_is_bit_exact(tiny_run, tmp_path, where):
    """SIGKILL at a point the test chooses (the 16th batch of epoch 2, or half-way through
    writing epoch 2's last.pt); the resumed run cleans the temporaries and ends with the
    uninterrupted run's weights and metrics."""
    ref_dir, ref = tiny_run
    out = tmp_path / "killed"
    cfg_json = json.dumps(TrainConfig(**TINY).to_dict())
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, str(out), str(torch.get_num_threads()), cfg_json, where],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    done = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert done == 1
    tmps = list(out.rglob(".*.tmp"))
    assert len(tmps) == (1 if where == "mid-write" else 0)
    assert (out / ".diffeosense.lock").exists()  # the killed run's lock: stale, taken over
    res = train(TrainConfig(**TINY), out, resume=True, progress=False)
    assert _states_equal(res.model, ref.model)
    ref_lines = [json.loads(s) for s in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    strip = lambda ms: [{k: v for k, v in m.items() if k != "time"} for m in ms]  # noqa: E731
    assert strip(lines) == strip(ref_lines)  # no lost or duplicated epoch
    assert not list(out.rglob(".*.tmp")) and not (out / ".diffeosense.lock").exists()


class _Interrupt(nn.Module):
    """Wraps a net; raises KeyboardInterrupt at forward call number ``at`` (a crash)."""

    def __init__(self, net: nn.Module, at: int | None):
        super().__init__()
        self.net, self.at, self.calls = net, at, 0

    def forward(self, x):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt
        return self.net(x)


def _dropout_net(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(32, 2))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("at", [3, 9, 17, "last.pt@2"])
def test_interrupt_anywhere_with_dropout(tmp_path, monkeypatch, at):
    """Crash at a forward call (mid-epoch, 8 batches + 1 eval batch per epoch) or while
    writing last.pt; the resumed run matches an uninterrupted one, dropout included."""
    x, y = _blobs(256, 0)
    xt, yt = _blobs(64, 1)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, data=DataConfig(noise=0.3, augment=True))
    nets = [_Interrupt(_dropout_net(), None), _Interrupt(_dropout_net(), None),
            _Interrupt(_dropout_net(), None if isinstance(at, str) else at)]  # fmt: skip
    check = _Interrupt(_dropout_net(), None)
    rng_before = torch.get_rng_state()
    ref = fit(nets[0], (x, y), (xt, yt), cfg, tmp_path / "ref", progress=False)
    out = tmp_path / "run"
    if isinstance(at, str):
        real = T.write_bytes

        def crashing(path, data):
            if path.name == "last.pt" and b"epoch_0002" not in data and (out / "checkpoints" /
                                                                       "epoch_0002.pt").exists():
                raise KeyboardInterrupt
            return real(path, data)

        monkeypatch.setattr(T, "write_bytes", crashing)
        with pytest.raises(KeyboardInterrupt):
            fit(nets[2], (x, y), (xt, yt), cfg, out, progress=False)
        monkeypatch.setattr(T, "write_bytes", real)
        assert load_checkpoint(out / "checkpoints" / "last.pt", check)[2]["epoch"] == 1
    else:
        with pytest.raises(KeyboardInterrupt):
            fit(nets[2], (x, y), (xt, yt), cfg, out, progress=False)
    res = fit(nets[1], (x, y), (xt, yt), cfg, out, resume=True, progress=False)
    assert _states_equal(res.model, ref.model)
    assert [m["train_loss"] for m in res.history] == [m["train_loss"] for m in ref.history]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left untouched


def test_corrupted_checkpoints_are_clear_errors(tiny_run, tmp_path):
    out, _ = tiny_run
    good = (out / "checkpoints" / "epoch_0001.pt").read_bytes()
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="is not a file this tool reads: not a diffeosense "
                       "checkpoint") as e:
        load_checkpoint(bad)
    assert "weights_only" not in str(e.value) and "earlier" not in str(e.value)
    bad.write_bytes(good[: len(good) // 2])  # truncated, as by a crash without atomic writes
    with pytest.raises(ValueError, match="is not a file this tool reads"):
        load_checkpoint(bad)
    # The same truncation of a run's own checkpoint: its other checkpoints are named.
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "init.pt").write_bytes(good)
    (ck / "last.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"last\.pt is damaged \(truncated or corrupted.*Use "
                       r"an earlier checkpoint of the same run \(init\.pt in"):
        load_checkpoint(ck / "last.pt")
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="not a diffeosense checkpoint"):
        load_checkpoint(bad)
    from fractions import Fraction

    torch.save({"obj": Fraction(1, 3)}, bad)  # a Python object torch does not load safely
    with pytest.raises(ValueError, match=r"not a diffeosense checkpoint: it holds pickled "
                       r"Python objects \(such as fractions.Fraction\).*not loaded") as e:
        load_checkpoint(bad)
    assert "weights_only" not in str(e.value) and "safe_globals" not in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_architecture_is_a_clear_error(tiny_run):
    out, _ = tiny_run
    path = out / "checkpoints" / "last.pt"
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_checkpoint(path, model=create_model("lenet", in_channels=1))
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_checkpoint(path, model=create_model("simplecnn", in_channels=1, depth=2, width=8))


def test_resume_refusals_never_touch_good_files(tiny_run, tmp_path):
    src, _ = tiny_run
    out = tmp_path / "copy"
    (out / "checkpoints").mkdir(parents=True)
    for p in (src / "checkpoints").iterdir():
        (out / "checkpoints" / p.name).write_bytes(p.read_bytes())
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(**TINY), out, progress=False)
    other = TrainConfig(**{**TINY, "model_kwargs": {"depth": 2, "width": 8}})
    with pytest.raises(ValueError, match="model_kwargs"):
        train(other, out, resume=True, progress=False)
    last.write_bytes(before[:1000])
    with pytest.raises(ValueError, match="corrupted"):
        train(TrainConfig(**TINY), out, resume=True, progress=False)
    assert last.read_bytes() == before[:1000]  # nothing overwritten by the failed resume
    assert load_checkpoint(out / "checkpoints" / "epoch_0002.pt")[2]["epoch"] == 2


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    x, y = _blobs(64, 0)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e30, schedule="constant")
    net = create_model("simplecnn", in_channels=1, num_classes=2, depth=1, width=4)
    with pytest.raises(ValueError, match="diverged"):
        fit(net, (x, y), None, cfg, tmp_path / "run", progress=False)
    info = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", model=net)[2]
    assert info["epoch"] == 0 and all(torch.isfinite(p).all() for p in net.parameters())


def test_missing_dataset_and_bad_labels(tmp_path):
    cfg = TrainConfig(data=DataConfig("cifar10", root=str(tmp_path), download=False))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        train(cfg, tmp_path / "run", progress=False)
    x, y = _blobs(32, 0)
    with pytest.raises(ValueError, match="hinge"):
        fit(create_model("fc2", in_channels=1, num_classes=1, image_size=8), (x, y), None,
            TrainConfig(loss="hinge", epochs=1), progress=False)  # fmt: skip


def _cli(argv):
    from diffeosense.cli import train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.func(args)


def test_cli_trains_embedded_mnist(tmp_path, capsys):
    out = tmp_path / "lenet"
    argv = ["--model", "lenet", "--data", "mnist-embedded", "--P", "1000", "--epochs", "2",
            "--batch-size", "50", "--lr", "0.05", "--out", str(out), "--no-progress",
            "--keep-every", "0"]  # fmt: skip
    assert _cli(argv) == 0
    assert "test error" in capsys.readouterr().out
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["test_error"] < 0.6  # chance is 0.9: it learned something
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert not list((out / "checkpoints").glob("epoch_*.pt"))
    assert _cli([*argv, "--resume"]) == 0  # a finished run resumes to itself
    with pytest.raises(FileNotFoundError):
        _cli(["--data", "svhn", "--data-root", str(tmp_path), "--no-download", "--out",
              str(tmp_path / "x"), "--no-progress"])  # fmt: skip


class _NanInEval(nn.Module):
    """A net that trains normally but answers NaN in eval mode (a non-finite test loss)."""

    def __init__(self):
        super().__init__()
        self.net = create_model("simplecnn", in_channels=1, num_classes=2, depth=1, width=4)

    def forward(self, x):
        out = self.net(x)
        return out if self.training else out * float("nan")


def test_non_finite_test_loss_stops_and_keeps_last_finite_checkpoint(tmp_path):
    x, y = _blobs(64, 0)
    xt, yt = _blobs(32, 1)
    net = _NanInEval()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05)
    with pytest.raises(ValueError, match=r"diverged at epoch 1 \(test loss nan\).*Lower"):
        fit(net, (x, y), (xt, yt), cfg, tmp_path / "run", progress=False)
    info = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", model=_NanInEval())[2]
    assert info["epoch"] == 0 and not (tmp_path / "run" / "summary.json").exists()


def test_huge_lr_is_a_clear_error_at_the_first_non_finite_batch(tmp_path, capsys):
    from diffeosense.cli import main

    out = tmp_path / "lenet"
    argv = ["train", "--model", "lenet", "--P", "256", "--epochs", "2", "--batch-size", "32",
            "--lr", "1e6", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "diverged at epoch 1 (train loss of batch" in err and "--lr" in err
    assert len(err.strip().splitlines()) == 1
    assert load_checkpoint(out / "checkpoints" / "last.pt")[2]["epoch"] == 0
    assert not (out / "summary.json").exists()


def test_loss_explosion_in_the_first_epoch_warns():
    """A linear net that separates the blobs, tested on flipped labels: its test loss grows
    with the logit scale, ~lr x 100 after one epoch (a robust fact, unlike the chaotic
    trajectory of a ReLU net at a high lr); with the true labels the loss falls."""
    import warnings

    x, y = _blobs(256, 0)
    xt, yt = _blobs(64, 1)

    def run(lr, labels):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        cfg = TrainConfig(epochs=1, batch_size=32, lr=lr, schedule="constant")
        return fit(net, (x, y), (xt, labels), cfg, progress=False)

    with pytest.warns(T.LossExplosionWarning, match="exploded in the first epoch"):
        res = run(1.0, 1 - yt)
    assert res.final["test_loss"] > 10 * 0.69
    with warnings.catch_warnings():
        warnings.simplefilter("error", T.LossExplosionWarning)
        res = run(0.05, yt)
    assert res.final["test_loss"] < 0.69


def test_concurrent_run_into_the_same_folder_is_refused(tmp_path, capsys):
    """A second run into a folder that a live run holds fails at once with one line, and
    writes nothing (the first run's files are never mixed with its own)."""
    from diffeosense._io import run_lock
    from diffeosense.cli import main

    out = tmp_path / "run"
    locked, release = threading.Event(), threading.Event()

    def first_run():
        with run_lock(out):
            locked.set()
            release.wait(60)

    t = threading.Thread(target=first_run)
    t.start()
    try:
        locked.wait(60)
        argv = ["train", "--model", "lenet", "--P", "64", "--epochs", "1", "--out", str(out),
                "--no-progress"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("diffeosense train: error: run folder") and "in use by" in err
        assert len(err.splitlines()) == 1
        assert sorted(p.name for p in out.iterdir()) == [".diffeosense.lock"]
    finally:
        release.set()
        t.join()
    assert main(argv) == 0  # free again


class _DeleteFolderAt(nn.Module):
    """Wraps a net; deletes ``folder`` at forward call ``at`` (a user's rm -r mid-run)."""

    def __init__(self, net: nn.Module, folder, at: int):
        super().__init__()
        self.net, self.folder, self.at, self.calls = net, folder, at, 0

    def forward(self, x):
        import shutil

        self.calls += 1
        if self.calls == self.at:
            shutil.rmtree(self.folder)
        return self.net(x)


def test_output_folder_vanishing_mid_run_is_an_error(tmp_path):
    x, y = _blobs(64, 0)
    net = create_model("simplecnn", in_channels=1, num_classes=2, depth=1, width=4)
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05)
    with pytest.raises(FileNotFoundError, match="vanished during the run"):
        fit(_DeleteFolderAt(net, out, at=6), (x, y), None, cfg, out, progress=False)
    assert not out.exists()  # not re-created holding half a run


# ---------------------------------------------------------------------- the fast path

FAST = dict(precision="bf16", channels_last=True)


@pytest.mark.slow
def test_the_fast_path_trains_as_well_as_the_plain_loop():
    """bf16 autocast and channels_last on the embedded MNIST: the same test error as the
    fp32 loop within the noise of 1000 test images (they are different trajectories)."""
    base = dict(model="lenet", data=DataConfig("mnist-embedded"), epochs=2, batch_size=64,
                lr=0.05, keep_every=0)
    plain = train(TrainConfig(**base), progress=False)
    fast = train(TrainConfig(**base, **FAST), progress=False)
    e0, e1 = plain.history[-1]["test_error"], fast.history[-1]["test_error"]
    assert e0 < 0.15 and e1 < 0.15  # both learn (chance: 0.9; measured 7.7 % and 7.4 %)
    # Two trajectories, 1000 test images: binomial noise ~ 0.8 points each; 4 points apart at
    # most.
    assert abs(e0 - e1) < 0.04, (e0, e1)
    conv = next(m for m in fast.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.dtype == torch.float32  # fp32 weights (autocast)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("at", [5, 11])
def test_the_fast_path_resumes_bit_exact(tmp_path, at):
    x, y = _blobs(256, 0)
    xt, yt = _blobs(64, 1)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, data=DataConfig(noise=0.3,
                                                                        augment=True), **FAST)
    ref = fit(_Interrupt(_dropout_net(), None), (x, y), (xt, yt), cfg, tmp_path / "ref",
              progress=False)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(_Interrupt(_dropout_net(), at), (x, y), (xt, yt), cfg, out, progress=False)
    res = fit(_Interrupt(_dropout_net(), None), (x, y), (xt, yt), cfg, out, resume=True,
              progress=False)
    assert _states_equal(res.model, ref.model)
    assert [m["train_loss"] for m in res.history] == [m["train_loss"] for m in ref.history]
    # A run of the plain loop does not resume as a fast one: the recipe differs.
    with pytest.raises(ValueError, match="precision"):
        fit(_Interrupt(_dropout_net(), None), (x, y), (xt, yt),
            TrainConfig(**{**cfg.to_dict(), "precision": "fp32", "data": cfg.data}), out,
            resume=True, progress=False)


def test_the_fast_path_refuses_a_diverging_epoch_at_its_end(tmp_path):
    x, y = _blobs(64, 0)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e30, schedule="constant", **FAST)
    net = create_model("simplecnn", in_channels=1, num_classes=2, depth=1, width=4)
    with pytest.raises(ValueError, match="diverged at epoch 1 \\(train loss"):
        fit(net, (x, y), None, cfg, tmp_path / "run", progress=False)
    info = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", model=net)[2]
    assert info["epoch"] == 0  # the diverged epoch's weights were never checkpointed


def test_precision_is_checked_and_old_folders_keep_their_hash():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")
    from diffeosense.experiments.run import RunConfig

    rc = RunConfig(train=TrainConfig())
    d = rc.to_dict()
    for k in ("precision", "channels_last", "compile"):
        del d["train"][k]  # a config written before the fast path existed
    assert RunConfig.from_dict(d).hash() == rc.hash()
    assert RunConfig(train=TrainConfig(precision="bf16")).hash() != rc.hash()
