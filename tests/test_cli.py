"""The command line's entry point: every expected error is one line and exit code 2, found
before any work; ``--debug`` shows the traceback; explicit flags override ``--config``."""

from __future__ import annotations

import errno
import json
import os

import pytest

from diffeosense.cli import main


def _one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"diffeosense {argv[0]}: error: "), err
    for w in words:
        assert w in err, err
    return err


TRAIN = ["train", "--P", "64", "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize("argv, words", [
    (["--noise", "nan"], ["DataConfig.noise must be a finite number >= 0, got nan"]),
    (["--lr", "inf"], ["TrainConfig.lr must be a finite number > 0 (or None), got inf"]),
    (["--momentum", "nan"], ["TrainConfig.momentum must be a finite number >= 0 and < 1"]),
    (["--model-kw", "depth=abc"], ["option depth='abc' must be int (default 4)"]),
    (["--model-kw", "depth"], ["--model-kw expects KEY=VALUE"]),
    (["--device", "tpu"], ["device must be cpu, cuda, cuda:N, mps or auto, got 'tpu'"]),
    (["--model", "cnn1d"], ["cnn1d is a 1D network", "signals [C, L]", "mnist-embedded"]),
], ids=["noise-nan", "lr-inf", "momentum-nan", "model-kw", "model-kw-form", "device",
        "cnn1d-on-images"])  # fmt: skip
def test_train_option_errors_are_one_line_before_any_work(tmp_path, capsys, argv, words):
    out = tmp_path / "run"
    _one_line_error(capsys, [*TRAIN, *argv, "--out", str(out)], *words)
    assert not (out / "checkpoints").exists()  # refused before training started


def test_measure_and_scale_detection_option_errors(tmp_path, capsys):
    _one_line_error(capsys, ["measure", "--model", "lenet", "--perturbation", "diffeo:cut=abc",
                             "--out", str(tmp_path / "m"), "--no-plot", "--no-progress"],
                    "MaxEntDiffeo.cut must be int, got 'abc'")  # fmt: skip
    _one_line_error(capsys, ["measure", "--model", "lenet", "--device", "tpu", "--out",
                             str(tmp_path / "m2"), "--no-plot", "--no-progress"],
                    "device must be cpu, cuda")  # fmt: skip
    _one_line_error(capsys, ["scale-detection", "--set", "width=abc", "--out", str(tmp_path)],
                    "ScaleDetectionExperiment.width must be int, got 'abc'")
    _one_line_error(capsys, ["scale-detection", "--epochs", "0", "--out", str(tmp_path)],
                    "ScaleDetectionExperiment.epochs must be >= 1")
    assert not list(tmp_path.glob("scale-detection-*"))


def test_measure_checks_its_output_folder_before_computing(tmp_path, capsys, monkeypatch):
    import diffeosense.sensitivity as S

    def never(*a, **k):
        raise AssertionError("measure ran although --out was unusable")

    monkeypatch.setattr(S, "measure", never)
    f = tmp_path / "a-file"
    f.write_text("x")
    argv = ["measure", "--model", "lenet", "--n-probes", "10", "--no-plot", "--no-progress"]
    _one_line_error(capsys, [*argv, "--out", str(f)], "is a file")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        _one_line_error(capsys, [*argv, "--out", str(ro / "sub")], "ermission denied")


def test_disk_full_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import diffeosense.train as T

    real = T.write_bytes

    def full(path, data):
        if path.name == "epoch_0001.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(T, "write_bytes", full)
    out = tmp_path / "run"
    argv = [*TRAIN, "--model", "lenet", "--out", str(out)]
    err = _one_line_error(capsys, argv, "No space left on device", "epoch_0001.pt",
                          "free some space")  # fmt: skip
    assert "Traceback" not in err
    assert T.load_checkpoint(out / "checkpoints" / "last.pt")[2]["epoch"] == 0  # kept
    with pytest.raises(OSError, match="No space left"):
        main([*argv, "--resume", "--debug"])  # after the command
    with pytest.raises(OSError, match="No space left"):
        main(["--debug", *argv, "--resume"])  # before it


def test_explicit_flags_override_the_config_file(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", "--model", "lenet", "--P", "64", "--epochs", "2", "--lr", "0.05",
                 "--out", str(first), "--no-progress"]) == 0  # fmt: skip
    second = tmp_path / "second"
    assert main(["train", "--config", str(first / "config.json"), "--epochs", "1", "--out",
                 str(second), "--no-progress"]) == 0  # fmt: skip
    assert "--epochs 1 overrides epochs=2" in capsys.readouterr().err
    cfg = json.loads((second / "config.json").read_text())["config"]
    assert cfg["epochs"] == 1 and cfg["lr"] == 0.05 and cfg["data"]["P"] == 64
    assert len((second / "metrics.jsonl").read_text().splitlines()) == 1
    _one_line_error(capsys, ["train", "--config", str(tmp_path / "none.json"), "--out",
                             str(tmp_path / "x")], "--config: no file")  # fmt: skip


def test_plot_refuses_a_truncated_table_and_a_stale_one(tmp_path, capsys):
    import torch

    from diffeosense.models import create_model
    from diffeosense.sensitivity import measure

    net = create_model("simplecnn", in_channels=1, num_classes=2, depth=2, width=4)
    res = measure(net, torch.randn(8, 1, 12, 12, generator=torch.Generator().manual_seed(0)),
                  n_probes=8)  # fmt: skip
    folder = tmp_path / "sens"
    csv = res.save(folder / "sensitivity.csv")
    png = tmp_path / "p.png"
    assert main(["plot", str(folder), "--out", str(png)]) == 0
    text = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(text[:-2]))
    _one_line_error(capsys, ["plot", str(csv), "--out", str(png)], str(csv),
                    "does not match its sidecar")
    csv.write_text("".join(text))
    res.save(folder / "sensitivity.json")  # a newer result beside the older CSV
    os.utime(csv, (1e9, 1e9))
    _one_line_error(capsys, ["plot", str(folder), "--out", str(png)], "holds several results",
                    "the newest is sensitivity.json", "Name the file")


def test_measure_output_folder_deleted_mid_run_is_an_error(tmp_path, capsys, monkeypatch):
    import shutil

    import diffeosense.sensitivity as S

    out = tmp_path / "m"
    real = S.measure

    def measure_then_rm(*a, **k):
        res = real(*a, **k)
        shutil.rmtree(out)  # the user deletes the folder while the measurement runs
        return res

    monkeypatch.setattr(S, "measure", measure_then_rm)
    _one_line_error(capsys, ["measure", "--model", "lenet", "--n-probes", "8", "--no-plot",
                             "--no-progress", "--out", str(out)], "vanished during the run")
    assert not out.exists()  # not re-created with a result in it


# Every command that makes an output folder (or file), with a valid rest of the command line.
def _commands(tmp_path, out):
    sweep = tmp_path / "s.toml"
    sweep.write_text('[grid]\nseed = [0]\n[train]\nepochs = 1\ndevice = "cuda"\n'
                     '[data]\nP = 64\n[measure]\nn_probes = 10\n')
    return {
        "measure": ["measure", "--model", "lenet", "--n-probes", "10", "--no-progress",
                    "--device", "cuda", "--out", out],
        "pooling": ["pooling", "--model", "lenet", "--n-probes", "10", "--no-progress",
                    "--device", "cuda", "--out", out],
        "train": [*TRAIN, "--device", "cuda", "--out", out],
        "demo": ["demo", "--epochs", "1", "--no-progress", "--device", "cuda", "--out", out],
        "scale-detection": ["scale-detection", "--epochs", "1", "--no-progress", "--device",
                            "cuda", "--out", out],
        "scale-detection-2d": ["scale-detection-2d", "--epochs", "1", "--no-progress",
                               "--device", "cuda", "--out", out],
        "reproduce": ["reproduce", "layerwise", "--no-progress", "--device", "cuda",
                      "--out", out],
        "sweep": ["sweep", str(sweep), "--workers", "1", "--out", out],
    }


COMMANDS = ["measure", "pooling", "train", "demo", "scale-detection", "scale-detection-2d",
            "reproduce", "sweep"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_gpu_is_one_line_before_any_folder(tmp_path, capsys, monkeypatch, command):
    """--device cuda on a machine without a GPU (made so here on every machine)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    _one_line_error(capsys, _commands(tmp_path, str(out))[command],
                    "cuda: CUDA is not available on this machine", "cpu")
    assert not out.exists()


def test_a_cluster_backend_does_not_check_the_drivers_device(monkeypatch):
    """The units of a Ray/SLURM sweep run on the cluster's devices, not the driver's."""
    import torch

    from diffeosense.cli._options import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_device("cuda", "slurm")
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_device("cuda", "local")


@pytest.mark.parametrize("command", COMMANDS + ["collect", "diffeo show"])
def test_out_an_existing_file_is_refused_before_anything(tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        if command == "collect":
            (tmp_path / "sweep").mkdir(exist_ok=True)
            argv = ["collect", str(tmp_path / "sweep"), "--out", str(out / "t.csv")]
        elif command == "diffeo show":
            argv = ["diffeo", "show", "--out", str(out / "x.png")]
        else:
            argv = [a if a != "cuda" else "cpu" for a in _commands(tmp_path, str(out))[command]]
        assert main(argv) == 2
        cap = capsys.readouterr()
        assert cap.out == "", cap.out  # nothing printed first
        err = cap.err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert str(afile) in err and "is a file" in err, err
    assert afile.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) in (["afile"], ["afile", "s.toml"],
                                                          ["afile", "sweep"])


@pytest.mark.parametrize("argv", [
    ["measure", "--model", "nosuchnet"],
    ["measure", "--model", "lenet", "--data", "nosuchdata"],
    ["pooling", "--model", "nosuchnet"],
    ["pooling", "--model", "lenet", "--data", "nosuchdata"],
    ["train", "--model", "nosuchnet", "--epochs", "1"],
    ["train", "--data", "nosuchdata", "--epochs", "1"],
    ["demo", "--model", "nosuchnet"],
    ["demo", "--model-kwargs", '{"depht": 2}'],
], ids=["measure-model", "measure-data", "pooling-model", "pooling-data", "train-model",
        "train-data", "demo-model", "demo-model-kwargs"])
def test_failed_commands_leave_no_empty_folder(tmp_path, capsys, argv):
    """Nothing is left behind, neither an empty folder nor half a result (the demo's
    photograph before its model is found unknown)."""
    out = tmp_path / "a" / "b"
    assert main([*argv, "--no-progress", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"diffeosense {argv[0]}: error: ")
    assert list(tmp_path.iterdir()) == []  # neither b nor the a it made


def _sigint_default():
    """In the child, before exec: Ctrl-C handled by default even when the test runner was
    started in the background by a shell, which ignores SIGINT there (and the ignored
    disposition is inherited across exec: the command would never see the signal)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_reproduce_is_one_line_and_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "rep"
    proc = subprocess.Popen([sys.executable, "-m", "diffeosense.cli", "reproduce",
                             "noisy-training", "--scale", "quick", "--workers", "1",
                             "--no-progress", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("runs/*/train/checkpoints/init.pt")):  # a unit is training
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "reproduce never started a unit"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffeosense reproduce: interrupted: ") and \
        f"kept in {out / 'runs'}/" in lines[0] and "run the same command again" in lines[0]
    assert list(out.rglob(".diffeosense.lock")) == []


def test_ctrl_c_on_train_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import diffeosense.train as T

    calls = []
    real = T._train_one_epoch

    def interrupted_in_epoch_2(run, epoch, *a, **k):
        calls.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt
        return real(run, epoch, *a, **k)

    monkeypatch.setattr(T, "_train_one_epoch", interrupted_in_epoch_2)
    out = tmp_path / "run"
    assert main(["train", "--P", "64", "--epochs", "3", "--no-progress", "--out", str(out)]) \
        == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"diffeosense train: interrupted: the last finished epoch is kept in "
                   f"{out / 'checkpoints' / 'last.pt'}; continue with the same command and "
                   f"--resume")
