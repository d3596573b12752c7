"""Sweeps: declarative files, validation, kill-and-restart, failures, dry-run, exit status.

* A sweep killed (SIGKILL, in a subprocess) while its second run is training, at a point the
  test controls (a model that blocks at a given training step once it has said so in a file),
  then restarted, ends with the same table as an uninterrupted sweep; the finished run is not
  re-run (its attempt counter stays 1 and its ``done`` marker is untouched) and the killed one
  resumes (2 attempts, its first epoch not retrained: the epoch-1 checkpoint is untouched).
* A run that raises is recorded with its traceback (``error.txt``), the others complete, and
  the exit status is the number of failed runs.
* Unknown tables, axes and fields in a sweep file are refused with the valid names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffeosense.cli import main
from diffeosense.experiments.collect import collect
from diffeosense.experiments.sweep import expand, load_sweep, parse_sweep, plan, run_sweep
from diffeosense.models import list_models

# A simplecnn that can block: with DIFFEOSENSE_TEST_HOLD=<file>:<n> it writes <file> at the
# n-th training forward pass of the process and then sleeps until killed.
TEST_MODELS = '''
import os, time
from diffeosense.models import create_model, list_models, register_model

_calls = [0]

def holdcnn(in_channels=1, num_classes=10, **kw):
    net = create_model("simplecnn", in_channels=in_channels, num_classes=num_classes, **kw)

    def pre(module, args):
        if not module.training:
            return
        _calls[0] += 1
        hold = os.environ.get("DIFFEOSENSE_TEST_HOLD")
        if hold:
            path, n = hold.rsplit(":", 1)
            if _calls[0] == int(n):
                open(path, "w").write("held")
                time.sleep(600)

    net.register_forward_pre_hook(pre)
    return net

def failnet(in_channels=1, num_classes=10, **kw):
    net = create_model("simplecnn", in_channels=in_channels, num_classes=num_classes, **kw)

    def pre(module, args):
        if module.training:
            raise RuntimeError("boom from failnet")

    net.register_forward_pre_hook(pre)
    return net

if "holdcnn" not in list_models():
    register_model("holdcnn")(holdcnn)
    register_model("failnet")(failnet)
'''
exec(TEST_MODELS, {})
assert "holdcnn" in list_models()

SWEEP = """
[grid]
model = {models}
seed = [0, 1]
P = [200]
epochs = [2]
lr = [0.05]
[train]
batch_size = 50
eval_batch_size = 500
[measure]
layers = "all"
n_probes = 20
measure_kwargs = {{ batch_size = 10 }}
[model_kwargs.holdcnn]
depth = 1
width = 4
[model_kwargs.simplecnn]
depth = 1
width = 4
[model_kwargs.failnet]
depth = 1
width = 4
"""


def _write(tmp_path: Path, models: list[str]) -> Path:
    p = tmp_path / "sweep.toml"
    p.write_text(SWEEP.format(models=json.dumps(models)))
    return p


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["run", "stage", "depth", "view", "channel"]).reset_index(drop=True)


def _assert_same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = _sorted(a), _sorted(b)
    num = ["D", "G", "R", "D_se", "G_se", "R_se", "num_D", "num_G", "denominator"]
    pd.testing.assert_frame_equal(a.drop(columns=num + ["test_error", "train_error"]),
                                  b.drop(columns=num + ["test_error", "train_error"]))
    # Same weights up to kernel rounding (resumption is exact on one machine and thread
    # count; the tables are compared with a margin, never bit for bit).
    np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-4,
                               atol=1e-9)
    np.testing.assert_allclose(a.test_error, b.test_error, atol=0.01)


def _wait_for_hold(proc: subprocess.Popen, flag: Path, timeout: float = 300) -> None:
    """Wait until the sweep in ``proc`` reaches its hold point (it writes ``flag``)."""
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the sweep never reached the hold point"
        time.sleep(0.05)


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    script = TEST_MODELS + "\nimport sys\nfrom diffeosense.cli import main\n" \
        "sys.exit(main(sys.argv[1:]))\n"
    src = str(Path(__file__).resolve().parents[1] / "src")
    e = {**os.environ, "OMP_NUM_THREADS": "1",
         "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_sweep_resumes_to_the_same_table(tmp_path):
    cfg = _write(tmp_path, ["holdcnn"])
    specs = expand(load_sweep(cfg))
    first, second = (tmp_path / "killed" / c.hash() for c in specs)

    # Uninterrupted reference, in this process.
    ref = run_sweep(specs, tmp_path / "ref", workers=1)
    assert ref.counts() == {"done": 2, "skipped": 0, "failed": 0, "elsewhere": 0}

    # 200 images / batch 50 = 4 steps per epoch: the first run takes steps 1-8, the second
    # blocks at step 14 = its epoch 2, step 2 (epoch 1 checkpointed, epoch 2 under way).
    flag = tmp_path / "held"
    proc = _cli(["sweep", str(cfg), "--out", str(tmp_path / "killed"), "--workers", "1"],
                env={"DIFFEOSENSE_TEST_HOLD": f"{flag}:14"})
    try:
        _wait_for_hold(proc, flag)
        assert (first / "done").is_file() and not (second / "done").exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    metrics = (second / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1]
    done_stamp = (first / "done").stat().st_mtime_ns
    epoch1 = second / "train" / "checkpoints" / "epoch_0001.pt"
    epoch1_stamp = epoch1.stat().st_mtime_ns

    # The restart, to completion, without the hold.
    proc = _cli(["sweep", str(cfg), "--out", str(tmp_path / "killed"), "--workers", "1"])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert f"skipped  {first.name}" in log and f"done     {second.name}" in log

    assert json.loads((first / "attempts.json").read_text())["attempts"] == 1
    assert (first / "done").stat().st_mtime_ns == done_stamp
    assert json.loads((second / "attempts.json").read_text())["attempts"] == 2
    assert epoch1.stat().st_mtime_ns == epoch1_stamp  # epoch 1 was not retrained
    _assert_same_tables(collect(tmp_path / "killed"), collect(tmp_path / "ref"))


def test_failing_run_is_recorded_and_the_others_complete(tmp_path, capsys):
    cfg = _write(tmp_path, ["failnet", "simplecnn"])
    root = tmp_path / "out"
    rc = main(["sweep", str(cfg), "--out", str(root), "--workers", "1"])
    assert rc == 2  # two failed runs (failnet, seeds 0 and 1)
    log = capsys.readouterr().out
    assert "2 ran, 0 already done, 2 failed" in log
    rows = plan(expand(load_sweep(cfg)), root)
    assert [r["status"] for r in rows] == ["failed", "failed", "done", "done"]
    for r in rows[:2]:
        tb = (Path(r["folder"]) / "error.txt").read_text()
        assert tb.startswith("Traceback") and "RuntimeError: boom from failnet" in tb
        assert not (Path(r["folder"]) / "done").exists()
    assert "RuntimeError: boom from failnet" in log
    df = collect(root)
    assert sorted(df.run.unique()) == sorted(r["hash"] for r in rows[2:])
    assert set(df.model) == {"simplecnn"}

    # Dry run: every run, its folder and status; nothing runs.
    assert main(["sweep", str(cfg), "--out", str(root), "--dry-run"]) == 0
    log = capsys.readouterr().out
    for r in rows:
        assert f"{r['status']:8s} {r['hash']}" in log and r["folder"] in log
    # Re-running only retries the failed runs.
    assert main(["sweep", str(cfg), "--out", str(root), "--workers", "1"]) == 2
    assert "0 ran, 2 already done, 2 failed" in capsys.readouterr().out


def test_dry_run_statuses_new_and_partial(tmp_path, capsys):
    cfg = _write(tmp_path, ["simplecnn"])
    root = tmp_path / "out"
    rows = plan(expand(load_sweep(cfg)), root)
    assert [r["status"] for r in rows] == ["new", "new"]
    (Path(rows[0]["folder"]) / "train").mkdir(parents=True)
    (Path(rows[0]["folder"]) / "run_config.json").write_text("{}")
    assert main(["sweep", str(cfg), "--out", str(root), "--dry-run"]) == 0
    log = capsys.readouterr().out
    assert f"partial  {rows[0]['hash']}" in log and f"new      {rows[1]['hash']}" in log
    assert not (Path(rows[1]["folder"])).exists()


def test_expand_grid_order_model_kwargs_and_duplicates():
    spec = parse_sweep({
        "grid": {"model": ["simplecnn", "fc2"], "noise": [0.0, 1.0], "train.batch_size": [32],
                 "layers": ["output", "all"]},
        "data": {"P": 100}, "model_kwargs": {"fc2": {"width": 8}},
        "measure": {"n_probes": 40, "stages": ["trained"]},
    })
    cfgs = expand(spec)
    assert len(cfgs) == 8
    assert [(c.train.model, c.train.data.noise, c.layers) for c in cfgs[:4]] == [
        ("simplecnn", 0.0, "output"), ("simplecnn", 0.0, "all"),
        ("simplecnn", 1.0, "output"), ("simplecnn", 1.0, "all")]
    assert all(c.train.model_kwargs == ({"width": 8} if c.train.model == "fc2" else {})
               for c in cfgs)
    assert all(c.train.batch_size == 32 and c.train.data.P == 100 and c.n_probes == 40
               and c.stages == ["trained"] for c in cfgs)
    assert len({c.hash() for c in cfgs}) == 8
    # The same point twice runs once.
    assert len(expand(parse_sweep({"grid": {"seed": [0, 0, 1]}}))) == 2


@pytest.mark.parametrize("bad, match", [
    ({"gird": {}}, "unknown SweepConfig keys.*gird"),
    ({"grid": {"modle": ["fc2"]}}, "unknown grid axis 'modle'"),
    ({"grid": {"model": "fc2"}}, "grid.model must be a non-empty list"),
    ({"grid": {"seed": []}}, "grid.seed must be a non-empty list"),
    ({"train": {"epoch": 3}}, "unknown TrainConfig keys.*epoch"),
    ({"data": {"noize": 1.0}}, "unknown DataConfig keys.*noize"),
    ({"measure": {"n_probe": 3}}, r"unknown \[measure\] keys.*n_probe"),
    ({"grid": {"train.data.noize": [1.0]}}, "unknown DataConfig keys.*noize"),
    ({"measure": {"measure_kwargs": {"statistc": "median"}}}, "unknown measure_kwargs"),
    ({"grid": {"noise": [-1.0]}}, r"DataConfig.noise must be .* >= 0"),
])
def test_bad_sweep_files_are_refused(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        parse_sweep(bad)


def test_load_sweep_files(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("[grid]\nseed = [0, 1]\n[grid\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_sweep(p)
    p.write_text('[grid]\nmodle = ["fc2"]\n')
    with pytest.raises(ValueError, match=r"s\.toml: unknown grid axis"):
        load_sweep(p)
    with pytest.raises(FileNotFoundError):
        load_sweep(tmp_path / "missing.toml")
    p.rename(tmp_path / "s.json")
    with pytest.raises(ValueError, match="use .toml"):
        load_sweep(tmp_path / "s.json")
    yaml = pytest.importorskip("yaml")
    y = tmp_path / "s.yaml"
    y.write_text(yaml.safe_dump({"grid": {"seed": [0, 1]}, "data": {"P": 100}}))
    assert [c.train.seed for c in expand(load_sweep(y))] == [0, 1]


def test_example_sweep_file_is_valid():
    example = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"
    cfgs = expand(load_sweep(example))
    assert len(cfgs) == 8 and {c.train.model for c in cfgs} == {"simplecnn", "fc2"}


def test_run_held_by_another_process_is_left_alone(tmp_path):
    import threading

    from diffeosense._io import run_lock
    from diffeosense.experiments.backends import execute_unit
    from diffeosense.experiments.run import run_dir

    cfg = expand(parse_sweep({"grid": {"seed": [0]}, "data": {"P": 100}}))[0]
    folder = run_dir(cfg, tmp_path)
    held, release = threading.Event(), threading.Event()

    def owner():
        with run_lock(folder):
            held.set()
            release.wait(60)

    t = threading.Thread(target=owner)
    t.start()
    try:
        assert held.wait(60)
        out = execute_unit(cfg.to_dict(), str(tmp_path))
    finally:
        release.set()
        t.join()
    assert out["status"] == "elsewhere" and out["error"].startswith("running elsewhere:")
    assert not (folder / "error.txt").exists() and not (folder / "attempts.json").exists()


def test_a_unit_running_in_another_sweep_is_not_a_failure(tmp_path, capsys):
    """Two sweeps on one root: the unit the other holds is 'running elsewhere', named as such,
    and the exit status counts failures only (0: everything else finished)."""
    import threading

    from diffeosense._io import run_lock
    from diffeosense.experiments.run import run_dir

    cfg = _write(tmp_path, ["simplecnn"])
    root = tmp_path / "out"
    held_cfg, free_cfg = expand(load_sweep(cfg))
    held, release = threading.Event(), threading.Event()

    def other_sweep():
        with run_lock(run_dir(held_cfg, root)):
            held.set()
            release.wait(120)

    t = threading.Thread(target=other_sweep)
    t.start()
    try:
        assert held.wait(60)
        rc = main(["sweep", str(cfg), "--out", str(root), "--workers", "1"])
    finally:
        release.set()
        t.join()
    log = capsys.readouterr().out
    assert rc == 0, log
    assert f"elsewhere {held_cfg.hash()}" in log and "running elsewhere: run folder" in log
    assert f"done     {free_cfg.hash()}" in log
    assert "1 ran, 0 already done, 0 failed, 1 running elsewhere" in log
    assert not (run_dir(held_cfg, root) / "error.txt").exists()
    report = json.loads((root / "sweep.json").read_text())
    assert report["counts"] == {"done": 1, "skipped": 0, "failed": 0, "elsewhere": 1}


def test_a_sweep_without_grid_is_refused(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text("[train]\nbatch_size = 32\n")
    with pytest.raises(ValueError, match=r"no \[grid\] table: it would run a single run .*"
                                         r"10 epochs, P all, 500 probes.*\[grid\] seed = \[0\]"):
        load_sweep(p)
    assert main(["sweep", str(p), "--out", str(tmp_path / "out")]) == 2
    assert "no [grid] table" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # The one run, asked for explicitly.
    assert len(expand(parse_sweep({"grid": {"seed": [0]}}))) == 1


def test_dry_run_names_a_damaged_checkpoint(tmp_path, capsys):
    cfg = _write(tmp_path, ["simplecnn"])
    root = tmp_path / "out"
    first = expand(load_sweep(cfg))[0]
    run_sweep([first], root, workers=1)
    folder = root / first.hash()
    (folder / "done").unlink()  # a partial run ...
    last = folder / "train" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:500])  # ... whose last checkpoint was cut short
    assert main(["sweep", str(cfg), "--out", str(root), "--dry-run"]) == 0
    log = capsys.readouterr().out
    line = next(ln for ln in log.splitlines() if first.hash() in ln)
    assert line.startswith("partial") and f"damaged: {last} is damaged (truncated" in line
    other = next(ln for ln in log.splitlines() if ln.startswith("new"))
    assert "damaged:" not in other


def test_sweep_out_an_existing_file_is_refused_before_anything(tmp_path, capsys):
    cfg = _write(tmp_path, ["simplecnn"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        assert main(["sweep", str(cfg), "--out", str(out)]) == 2
        cap = capsys.readouterr()
        assert cap.out == ""  # nothing printed before the error
        assert f"--out {out} is" in cap.err and "file" in cap.err
    assert afile.read_text() == "x"


def test_sigterm_releases_the_run_folder(tmp_path):
    """A run terminated by SIGTERM (a SLURM time limit) exits through its finally blocks: no
    lock is left that a run on another host could not take over, and the folder resumes."""
    cfg = _write(tmp_path, ["holdcnn"])
    first = tmp_path / "out" / expand(load_sweep(cfg))[0].hash()
    flag = tmp_path / "held"
    proc = _cli(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--workers", "1"],
                env={"DIFFEOSENSE_TEST_HOLD": f"{flag}:2"})
    try:
        _wait_for_hold(proc, flag)
        assert (first / ".diffeosense.lock").is_file()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in first.rglob(".diffeosense.lock")) == []
    assert not (first / "error.txt").exists() and not (first / "done").exists()
