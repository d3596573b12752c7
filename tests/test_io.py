"""Atomic writes: the target is whole or untouched, with ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from diffeosense._io import torch_save, write_json, write_text
from diffeosense.provenance import config_hash, provenance


def test_write_replaces_whole_file_with_umask_mode(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    write_text(p, "one")
    write_text(p, "two")
    assert p.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [f.name for f in p.parent.iterdir()] == ["a.txt"]  # no temporaries left


def test_failed_write_keeps_the_previous_file(tmp_path):
    p = tmp_path / "ckpt.pt"
    torch_save({"w": torch.ones(2)}, p)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        torch_save({"w": Boom()}, p)
    assert torch.equal(torch.load(p)["w"], torch.ones(2))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ckpt.pt"]


def test_json_of_tensors_and_config_hash(tmp_path):
    p = write_json(tmp_path / "r.json", {"t": torch.tensor([1.5]), "d": torch.float32})
    assert json.loads(p.read_text()) == {"t": [1.5], "d": "torch.float32"}
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    info = provenance()
    assert info["torch"] == torch.__version__ and info["threads"] >= 1


def test_dataclass_from_dict_refuses_unknown_keys():
    from diffeosense._io import dataclass_from_dict
    from diffeosense.data import DataConfig

    assert dataclass_from_dict(DataConfig, {"name": "mnist", "P": 10}).P == 10
    with pytest.raises(ValueError, match=r"unknown DataConfig keys: \['noize'\]"):
        DataConfig.from_dict({"name": "mnist", "noize": 1.0})  # a typo is never dropped


# -- tables and their sidecars ----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trips_exactly_and_refuses_tampering(tmp_path, suffix):
    import numpy as np
    import pandas as pd
    from _tables import assert_tampering_refused

    from diffeosense._io import read_table, write_table

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    x = np.random.default_rng(0).lognormal(size=50) ** 7  # floats that need 17 digits
    df = pd.DataFrame({"run": ["1e50", "0012"] * 25, "x": x, "n": np.arange(50)})
    path = write_table(tmp_path / f"t{suffix}", df, {"what": "test"})
    back, meta = assert_tampering_refused(path, lambda p: read_table(p, dtype={"run": str}))
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert meta["what"] == "test" and meta["table"]["rows"] == 50


def _crash_at(monkeypatch, k: int):
    """Make the k-th call of ``_io.atomic.write_bytes`` (every write of a table and its
    sidecar) from now raise KeyboardInterrupt (a kill)."""
    import diffeosense._io.atomic as io_mod

    real, calls = io_mod.write_bytes, []

    def write_bytes(path, data):
        calls.append(path)
        if len(calls) == k + 1:
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(io_mod, "write_bytes", write_bytes)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_two_phase_rewrite_killed_at_any_write_leaves_a_vouched_table(tmp_path, monkeypatch, k):
    """write_table(two_phase=True) writes: sidecar naming the pending table (0), the table
    (1), the final sidecar (2). Killed at any of them, the table read back is the old one or
    the new one, whole; an edit is still refused. Without two_phase, a kill before the final
    sidecar leaves a pair that read_table refuses: what two_phase is for."""
    import pandas as pd

    from diffeosense._io import read_table, write_table

    old = pd.DataFrame({"e": [0, 1], "D": [0.5, 0.25]})
    new = pd.concat([old, pd.DataFrame({"e": [2], "D": [0.125]})], ignore_index=True)
    path = write_table(tmp_path / "t.csv", old, {"v": 1}, two_phase=True)
    _crash_at(monkeypatch, k)
    with pytest.raises(KeyboardInterrupt):
        write_table(path, new, {"v": 2}, two_phase=True)
    monkeypatch.undo()
    back, meta = read_table(path)
    pd.testing.assert_frame_equal(back, new if k == 2 else old)
    assert ("pending_table" in meta) == (k > 0)
    path.write_text(path.read_text().replace("0.125", "0.126").replace("0.25", "0.26"))
    with pytest.raises(ValueError, match=rf"{path} does not match its sidecar"):
        read_table(path)

    fresh = tmp_path / "first.csv"  # the first write, killed before its final sidecar
    _crash_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        write_table(fresh, new, {}, two_phase=True)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_table(fresh)[0], new)

    plain = write_table(tmp_path / "plain.csv", old, {})
    _crash_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        write_table(plain, new, {})
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"plain.csv does not match its sidecar .*3 rows in "
                                         r"the table, 2 in the sidecar"):
        read_table(plain)


# -- run_lock ---------------------------------------------------------------------------------

_HOLD = (
    "import sys, time\n"
    "from diffeosense._io import run_lock\n"
    "with run_lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.readline()\n"
)


@pytest.fixture
def held_by_other_process(tmp_path):
    """A folder whose lock a live subprocess holds until the test ends."""
    import subprocess
    import sys

    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc.pid
    proc.stdin.close()
    proc.wait(timeout=60)


def test_run_lock_refuses_a_live_owner_and_names_it(held_by_other_process):
    import socket

    from diffeosense._io import RunFolderBusy, run_lock

    folder, pid = held_by_other_process
    with pytest.raises(RunFolderBusy, match=rf"in use by process {pid} on host "
                       rf"'{socket.gethostname()}'.*delete .*\.diffeosense\.lock"):  # fmt: skip
        with run_lock(folder):
            pass
    assert json.loads((folder / ".diffeosense.lock").read_text())["pid"] == pid  # untouched


def test_run_lock_takes_over_stale_locks(tmp_path):
    import socket
    import subprocess
    import sys

    from diffeosense._io import LOCK_NAME, run_lock
    from diffeosense._io.locks import _proc_start

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    lock = tmp_path / LOCK_NAME
    host = socket.gethostname()
    stale_owners = [
        {"pid": int(dead), "host": host},  # the process is gone
        # a live pid that another process now uses (its start time differs)
        {"pid": os.getpid(), "host": host, "start": "not-" + str(_proc_start(os.getpid()))},
    ]
    if _proc_start(os.getpid()) is None:
        stale_owners.pop()  # no /proc: pid reuse cannot be told apart here
    for owner in stale_owners:
        lock.write_text(json.dumps(owner))
        with run_lock(tmp_path) as held:
            assert json.loads(lock.read_text())["pid"] == os.getpid() == held.owner["pid"]
        assert not lock.exists()  # released


def test_a_lock_that_could_not_be_written_is_no_lock(tmp_path, monkeypatch):
    """A full disk while the lock is written: the error reaches the caller and no empty lock
    file is left to refuse every later run; an empty lock older than a few seconds (left by
    a writer that died) is taken over, a fresh one (being written) is refused."""
    import errno
    import time

    from diffeosense._io import LOCK_NAME, RunFolderBusy, locks, run_lock

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        with run_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_NAME).exists()
    monkeypatch.undo()
    (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(RunFolderBusy, match="being written"):
        with run_lock(tmp_path):
            pass
    old = time.time() - 10
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with run_lock(tmp_path) as held:
        assert held.owner["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_run_lock_another_host_is_busy(tmp_path):
    from diffeosense._io import LOCK_NAME, RunFolderBusy, run_lock

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "node-elsewhere-17"}))
    with pytest.raises(RunFolderBusy, match="node-elsewhere-17"):
        with run_lock(tmp_path):
            pass


def test_run_lock_is_reentrant_per_thread_and_released_on_error(tmp_path):
    import threading

    from diffeosense._io import LOCK_NAME, RunFolderBusy, run_lock

    errors = []

    def other_thread():
        try:
            with run_lock(tmp_path):
                pass
        except RunFolderBusy as e:
            errors.append(e)

    with pytest.raises(KeyError):
        with run_lock(tmp_path):
            with run_lock(str(tmp_path) + "/"):  # same folder, same thread: fine
                t = threading.Thread(target=other_thread)
                t.start()
                t.join()
            assert (tmp_path / LOCK_NAME).exists()  # the inner exit keeps the outer's lock
            raise KeyError("boom")
    assert len(errors) == 1 and not (tmp_path / LOCK_NAME).exists()


def test_run_lock_bad_folders_fail_before_any_work(tmp_path):
    from diffeosense._io import run_lock

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        with run_lock(f):
            pass
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(PermissionError, match="not writable"):
            with run_lock(ro):
                pass


def test_clean_stale_temporaries(tmp_path):
    from diffeosense._io import clean_stale_temporaries

    (tmp_path / "checkpoints").mkdir()
    tmps = [tmp_path / ".metrics.jsonl.a1.tmp", tmp_path / "checkpoints" / ".last.pt.b2.tmp"]
    keep = [tmp_path / "checkpoints" / "last.pt", tmp_path / "x.tmp.json"]
    for p in tmps + keep:
        p.write_text("x")
    assert sorted(clean_stale_temporaries(tmp_path)) == sorted(tmps)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in tmps)


def test_check_run_folder_detects_a_vanished_folder(tmp_path):
    import shutil

    from diffeosense._io import check_run_folder, run_lock

    folder = tmp_path / "run"
    with run_lock(folder):
        check_run_folder(folder)  # present and ours: fine
        shutil.rmtree(folder)
        with pytest.raises(FileNotFoundError, match="vanished during the run"):
            check_run_folder(folder)
        folder.mkdir()  # re-created by someone else: the lock is not there any more
        with pytest.raises(FileNotFoundError, match="vanished or changed owner"):
            check_run_folder(folder)
    with pytest.raises(FileNotFoundError, match="vanished"):
        check_run_folder(tmp_path / "never-made")
