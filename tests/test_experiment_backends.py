"""Backends: the same two-run sweep on a local process pool, on a real local Ray head, and as
a SLURM array through submitit's local executor gives the same table; a missing extra names
its install command.

The Ray head is started by the test (``ray start --head --block`` on 127.0.0.1, 2 CPUs, a
100 MB object store, no dashboard) in its own session and stopped by signalling that process
(its shutdown stops the raylet and workers); the sweep connects to it with ``--address``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffeosense.experiments.backends import get_backend, local_backend
from diffeosense.experiments.collect import collect
from diffeosense.experiments.sweep import expand, parse_sweep, run_sweep

SRC = str(Path(__file__).resolve().parents[1] / "src")
TOML = """
[grid]
model = ["simplecnn"]
seed = [0, 1]
P = [200]
epochs = [1]
lr = [0.05]
[train]
batch_size = 50
eval_batch_size = 500
[measure]
layers = "all"
n_probes = 20
measure_kwargs = { batch_size = 10 }
[model_kwargs.simplecnn]
depth = 1
width = 4
"""
SPEC = tomllib.loads(TOML)
NUM = ["D", "G", "R", "D_se", "G_se", "R_se", "num_D", "num_G", "denominator"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["run", "stage", "depth", "view", "channel"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a.drop(columns=NUM + ["test_error", "train_error"]),
                                  b.drop(columns=NUM + ["test_error", "train_error"]))
    # Other processes and thread counts may round the kernels differently: a margin.
    np.testing.assert_allclose(a[NUM].to_numpy(float), b[NUM].to_numpy(float), rtol=1e-4,
                               atol=1e-9)
    np.testing.assert_allclose(a.test_error, b.test_error, atol=0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The local backend, one run after the other in this process."""
    root = tmp_path_factory.mktemp("local")
    report = run_sweep(expand(parse_sweep(SPEC)), root, "local", workers=1)
    assert report.counts() == {"done": 2, "skipped": 0, "failed": 0, "elsewhere": 0}
    return collect(root)


def test_local_pool_equals_in_process(reference, tmp_path):
    """A pool of 2 spawned workers (1 thread each) gives the in-process table."""
    report = run_sweep(expand(parse_sweep(SPEC)), tmp_path, "local", workers=2)
    assert report.counts() == {"done": 2, "skipped": 0, "failed": 0, "elsewhere": 0}
    _same(collect(tmp_path), reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_head_gives_the_local_table(reference, tmp_path):
    pytest.importorskip("ray")
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    assert ray_bin, "the ray command is not installed beside this Python"
    port = _free_port()
    # A short temp dir of its own: Ray's socket paths must stay under 107 characters, and
    # another Ray on this machine is left alone.
    temp = tempfile.mkdtemp(prefix="dsray", dir="/tmp")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--object-store-memory=100000000", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(TOML)
    try:
        args = [sys.executable, "-c", "import sys; from diffeosense.cli import main; "
                "sys.exit(main(sys.argv[1:]))", "sweep", str(cfg), "--out",
                str(tmp_path / "ray"), "--backend", "ray", "--address", f"127.0.0.1:{port}"]
        # The head takes a few seconds to come up: retry the connection, not the runs.
        deadline = time.monotonic() + 120
        while True:
            out = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
            if out.returncode == 0 or "cannot reach the Ray cluster" not in out.stderr:
                break
            assert head.poll() is None, "the Ray head exited"
            assert time.monotonic() < deadline, out.stderr
            time.sleep(2)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "2 ran, 0 already done, 0 failed" in out.stdout
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block shuts its processes down
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
    _same(collect(tmp_path / "ray"), reference)


def test_slurm_through_submitit_local_executor(reference, tmp_path):
    pytest.importorskip("submitit")
    report = run_sweep(expand(parse_sweep(SPEC)), tmp_path, "slurm", cluster="local",
                       time_min=10, cpus=1, partition="ignored-locally", array_parallelism=2)
    assert report.counts() == {"done": 2, "skipped": 0, "failed": 0, "elsewhere": 0}, report.outcomes
    assert (tmp_path / "_submitit").is_dir()  # submitit's job logs
    _same(collect(tmp_path), reference)
    # Re-submitting skips the finished runs.
    again = run_sweep(expand(parse_sweep(SPEC)), tmp_path, "slurm", cluster="local")
    assert again.counts() == {"done": 0, "skipped": 2, "failed": 0, "elsewhere": 0}


@pytest.mark.parametrize("backend, module, extra", [("ray", "ray", "ray"),
                                                    ("slurm", "submitit", "slurm")])
def test_missing_extra_names_the_install_command(monkeypatch, tmp_path, backend, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ValueError, match=rf"pip install 'diffeosense\[{extra}\]'"):
        get_backend(backend)([], str(tmp_path))


def test_slurm_without_sbatch_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ValueError, match="no `sbatch`.*--cluster local"):
        get_backend("slurm")([{}], str(tmp_path))


def test_unreachable_ray_address_fails_fast(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match="cannot reach the Ray cluster"):
        get_backend("ray")([{}], str(tmp_path), address=f"127.0.0.1:{_free_port()}")
    with pytest.raises(ValueError, match="is not 'host:port'"):
        get_backend("ray")([{}], str(tmp_path), address="nonsense")


def test_bad_backend_options(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'dask'"):
        get_backend("dask")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        local_backend([{}], str(tmp_path), workers=0)



# A net whose training blocks (each worker writes FLAGS/<pid>, then sleeps) so that the test
# can act on a sweep while both workers are inside a unit.
HOLD_NET = '''
import os, time
from diffeosense.models import create_model

def net(in_channels=1, num_classes=10):
    m = create_model("simplecnn", in_channels=in_channels, num_classes=num_classes, depth=1,
                     width=4)

    def pre(module, args):
        flags = os.environ.get("DIFFEOSENSE_TEST_FLAGS")
        if module.training and flags:
            open(os.path.join(flags, str(os.getpid())), "w").write("held")
            time.sleep(600)

    m.register_forward_pre_hook(pre)
    return m
'''


def _held_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path, list[int]]:
    """A ``sweep --workers 2`` subprocess whose two workers are both inside a unit; returns
    it, its root and the workers' pids."""
    (tmp_path / "hold.py").write_text(HOLD_NET)
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[grid]\nmodel = ["{tmp_path / "hold.py"}:net"]\nseed = [0, 1]\n'
                   f'P = [100]\nepochs = [1]\n[measure]\nn_probes = 10\n')
    flags, root = tmp_path / "flags", tmp_path / "root"
    flags.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DIFFEOSENSE_TEST_FLAGS": str(flags), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "diffeosense.cli", "sweep", str(cfg),
                             "--out", str(root), "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Ctrl-C handled by default in the child, even when this runner
                            # was started in the background (a shell ignores SIGINT there).
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while len(list(flags.iterdir())) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the workers never reached their hold point:\n{out}\n{err}")
        time.sleep(0.1)
    return proc, root, [int(p.name) for p in flags.iterdir()]


def _children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by its new parent has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pids: set[int], timeout: float = 60.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p for p in pids if _alive(p)}
        if not left:
            return left
        time.sleep(0.2)
    return {p for p in pids if _alive(p)}


def _kill_all(pids: set[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_sweep(tmp_path):
    """kill -9 of the driver of `sweep --workers 2`: its workers (and the resource tracker)
    end within seconds, each releasing its run's lock, instead of running on as orphans."""
    proc, root, workers = _held_sweep(tmp_path)
    family = set(workers) | _children(proc.pid)
    try:
        assert set(workers) <= family
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        left = _wait_gone(family)
        assert not left, f"processes of the killed sweep still run: {sorted(left)}"
    finally:
        _kill_all(family)
    # Each worker unwound its run: no lock is left to refuse the next sweep.
    assert list(root.rglob(".diffeosense.lock")) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_on_a_pool_sweep_is_one_line_and_130(tmp_path):
    proc, root, workers = _held_sweep(tmp_path)
    family = set(workers) | _children(proc.pid)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert not _wait_gone(family)
    finally:
        _kill_all(family)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffeosense sweep: interrupted: 0 of 2 runs are finished and "
                               f"kept in {root}/"), err
    assert "run the same command again" in lines[0]
    assert list(root.rglob(".diffeosense.lock")) == []
