"""Atomic file writes, and run folders that one process at a time owns.

Every writer here writes to a temporary file in the destination folder, flushes it
to disk, then ``os.replace`` s it over the target (atomic on POSIX and Windows). A crash
(SIGKILL) between the two leaves a ``.NAME.*.tmp`` behind, never a half file:
:func:`clean_stale_temporaries` removes them once the folder's owner knows nobody writes.

:func:`run_lock` makes a run folder exclusive: a lock file holding the owner's pid, host
and process start time, created with ``O_EXCL``; a lock whose process is gone (same host)
is stale and taken over; a live one makes the second user fail with :class:`RunFolderBusy`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_write", "write_bytes", "write_text", "write_json", "torch_save", "to_jsonable",
    "dataclass_from_dict", "write_table", "read_table", "sidecar_path",
    "run_lock", "RunLock", "RunFolderBusy", "LOCK_NAME", "clean_stale_temporaries",
    "check_run_folder", "table_record", "check_table",
]


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Never leave the temporary behind, and never touch the previous good file.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Turn tensors, numpy values, paths, tuples and dataclasses into plain JSON values."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    return obj


def dataclass_from_dict(cls: type, d: dict[str, Any]):
    """``cls(**d)`` for a config dataclass, refusing unknown keys (a typo is never dropped)."""
    import dataclasses

    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} keys: {sorted(unknown)}; valid keys: "
            f"{[f.name for f in dataclasses.fields(cls)]}"
        )
    return cls(**d)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically: the previous file stays intact if saving fails."""
    return atomic_write(path, lambda f: torch.save(obj, f))


# ------------------------------------------------------------------ tidy tables
TABLE_SUFFIXES = (".csv", ".json", ".parquet")


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<stem>.meta.json`` beside a ``.csv`` / ``.parquet`` table."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def write_table(path: str | os.PathLike, table, meta: dict[str, Any], *,
                two_phase: bool = False) -> Path:
    """Write a ``pandas.DataFrame`` as ``.csv``, ``.json`` or ``.parquet`` (atomic).

    CSV and Parquet get a sidecar ``<stem>.meta.json`` holding ``meta`` (format, config,
    provenance) and the table's :func:`table_record` (file, rows, columns, SHA-256), written
    after the table: it vouches for it. JSON holds everything:
    ``{**meta, "n_rows": N, "rows": [...]}`` with NaN written as null.

    ``two_phase``: for a table rewritten in place while a run goes on (and resumed after a
    kill), first write the sidecar holding both the table on disk (``"table"``) and the new
    one (``"pending_table"``), then the table, then the final sidecar. A kill between any two
    of these writes leaves a table that its sidecar vouches for, old or new; without it, a
    kill between the table and its sidecar leaves a pair that :func:`read_table` refuses.

    >>> import pandas as pd, tempfile
    >>> p = write_table(Path(tempfile.mkdtemp()) / "t.csv", pd.DataFrame({"a": [1, 2]}), {})
    >>> read_table(p)[0].a.tolist()
    [1, 2]
    """
    import math

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in r.items()} for r in table.to_dict("records")]
        return write_json(path, {**meta, "n_rows": len(rows), "rows": rows})
    if suffix == ".csv":
        data = table.to_csv(index=False).encode("utf-8")
    elif suffix == ".parquet":
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        raise ValueError(f"unknown result format {path.suffix!r}: use .csv, .json or .parquet")
    record = table_record(path, data, len(table), list(table.columns))
    side = sidecar_path(path)
    if two_phase:
        try:
            current = json.loads(side.read_text()).get("table") if path.exists() else None
        except (OSError, ValueError, AttributeError):
            current = None  # no readable sidecar: the table on disk is vouched for by nothing
        write_json(side, {**meta, "table": current, "pending_table": record})
    write_bytes(path, data)
    write_json(side, {**meta, "table": record})  # last: the commit point
    return path


def read_table(path: str | os.PathLike, columns: list[str] | None = None,
               numeric: tuple[str, ...] = (), what: str = "diffeosense result",
               dtype: dict[str, Any] | None = None):
    """Read a table written by :func:`write_table`: returns ``(DataFrame, meta)``.

    ``columns`` orders the rows of a JSON table; ``numeric`` columns are coerced to float
    (JSON nulls and empty CSV cells become NaN); ``dtype`` is handed to ``pandas.read_csv``
    (e.g. ``{"run": str}`` for text that looks like numbers). CSV floats are read back
    exactly. A CSV/Parquet table is refused (a ValueError naming it) when it does not match
    its sidecar's row count, columns and hash (truncated, edited, replaced), and a
    FileNotFoundError when it has no sidecar. A table matching the ``"pending_table"`` of a
    :func:`write_table` ``two_phase`` write killed before its final sidecar is the one that
    write meant: it is accepted.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result file {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            blob = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON (truncated?): {e}") from None
        if not isinstance(blob, dict) or "rows" not in blob:
            raise ValueError(f"{path} is not a {what} (no 'rows')")
        n = blob.get("n_rows", len(blob["rows"]))
        if n != len(blob["rows"]):
            raise ValueError(f"{path} holds {len(blob['rows'])} rows but says {n}: it was "
                             f"edited after it was written; re-run to write it again")
        df = pd.DataFrame.from_records(blob["rows"], columns=columns)
        meta = blob
    else:
        if suffix not in (".csv", ".parquet"):
            raise ValueError(f"unknown result format {path.suffix!r}: use .csv, .json or "
                             ".parquet")
        side = sidecar_path(path)
        if not side.exists():
            raise FileNotFoundError(
                f"{path} has no sidecar {side.name} (its config, row count and hash): a table "
                f"without it cannot be checked; re-run to write both"
            )
        try:
            meta = json.loads(side.read_text())
        except ValueError as e:
            raise ValueError(f"the sidecar {side} is not valid JSON ({e})") from None
        data = path.read_bytes()
        # pandas >= 3 reads CSV floats back exactly by default (and deprecates the option);
        # pandas 2 needs it: a table re-read and rewritten (a resumed run's) must not drift.
        exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
        try:
            df = (pd.read_csv(io.BytesIO(data), dtype=dtype, **exact) if suffix == ".csv"
                  else pd.read_parquet(io.BytesIO(data)))  # fmt: skip
        except Exception as e:  # noqa: BLE001 - any parser error: a damaged table
            raise ValueError(f"{path} cannot be read as a table ({type(e).__name__}: {e}); "
                             f"re-run to write it again") from None
        check_table(path, data, len(df), list(df.columns), meta.get("table"), side,
                    pending=meta.get("pending_table"))
    for c in numeric:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df, meta


# ---------------------------------------------------------------------------------------------
# Run folders: one owner at a time.

LOCK_NAME = ".diffeosense.lock"
_GUARD_STALE_S = 30.0  # a takeover guard older than this was left by a crashed taker
# An owner writes its lock file within milliseconds of creating it: an empty (or unreadable)
# lock file older than this was left by a writer that died or failed (a full disk).
_EMPTY_LOCK_STALE_S = 5.0
_held: dict[tuple[Path, int], int] = {}  # (folder, thread) -> depth: reentrant per thread
_held_locks: dict[tuple[Path, int], RunLock] = {}
_held_mutex = threading.Lock()


class RunFolderBusy(RuntimeError):
    """Another live process (or thread) holds the run folder's lock."""


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux /proc; None elsewhere): tells a live owner
    from a later process that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5): starttime


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _read_owner(path: Path) -> dict[str, Any] | None:
    """The lock file's owner, or None when it is empty or unreadable (being written)."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and "pid" in owner else None


def _is_stale(owner: dict[str, Any]) -> bool:
    """The owner is known to be gone: same host, and its pid is dead or now names another
    process. An owner on another host cannot be checked from here: never stale."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = int(owner["pid"])
    if not _pid_alive(pid):
        return True
    start = owner.get("start")
    return start is not None and _proc_start(pid) not in (None, start)


def _take_over(path: Path, owner: dict[str, Any]) -> None:
    """Remove a stale lock. A guard file (``O_EXCL``) makes the check-and-remove atomic among
    takers: nobody else can remove the fresh lock of a taker that went first."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - guard.stat().st_mtime > _GUARD_STALE_S:
                guard.unlink()
        time.sleep(0.05)
        return
    try:
        if _read_owner(path) == owner:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def _busy(folder: Path, path: Path, owner: dict[str, Any] | None) -> RunFolderBusy:
    if owner is None:
        who = "another process (its lock file is being written)"
    else:
        who = f"process {owner.get('pid')} on host {owner.get('host')!r}"
        if owner.get("since"):
            who += f" since {owner['since']}"
    return RunFolderBusy(
        f"run folder {folder} is in use by {who}: wait for it to finish or choose another "
        f"output folder. If no such process runs any more, delete {path}"
    )


class RunLock:
    """The held lock of a run folder (what :func:`run_lock` yields)."""

    def __init__(self, folder: Path, path: Path, owner: dict[str, Any]):
        self.folder, self.path, self.owner = folder, path, owner

    def check(self) -> None:
        """Raise FileNotFoundError if the run folder vanished (deleted or moved) or the lock
        is no longer ours: writing on would recreate a folder that holds half a run."""
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"the output folder {self.folder} vanished during the run (deleted or moved); "
                f"stopped before writing into a re-created, incomplete folder"
            )
        if _read_owner(self.path) != self.owner:
            raise FileNotFoundError(
                f"the lock {self.path} of the output folder vanished or changed owner during "
                f"the run (was the folder deleted or replaced?); stopped"
            )


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[RunLock]:
    """Hold ``folder`` (created if needed) exclusively for the ``with`` block.

    The lock is the file ``folder/.diffeosense.lock`` (JSON: pid, host, process start, since),
    created with ``O_EXCL`` and removed on exit. A lock left by a dead process on this host
    is stale and taken over; a live owner (another process, or another thread of this one)
    makes this raise :class:`RunFolderBusy`, naming the owner. Reentrant within a thread,
    so an experiment that holds its folder may call engines that lock the same folder.
    Errors on a folder that is a file or not writable are raised here, before any work.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with run_lock(d) as lock:
    ...     lock.path.name
    '.diffeosense.lock'
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output folder {folder} is a file; choose a folder")
    folder.mkdir(parents=True, exist_ok=True)
    key = (folder.resolve(), threading.get_ident())
    with _held_mutex:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
    if depth:
        try:
            yield _held_locks[key]
        finally:
            with _held_mutex:
                _held[key] -= 1
        return
    lock = _acquire(folder)
    with _held_mutex:
        _held[key], _held_locks[key] = 1, lock
    try:
        yield lock
    finally:
        with _held_mutex:
            del _held[key], _held_locks[key]
        if _read_owner(lock.path) == lock.owner:
            lock.path.unlink(missing_ok=True)


def check_run_folder(folder: str | os.PathLike) -> None:
    """Before writing results into ``folder``: raise FileNotFoundError if it vanished during
    the run (or, when this thread holds its :func:`run_lock`, if the lock is gone), instead of
    letting an atomic write re-create it holding half a run."""
    folder = Path(folder)
    lock = _held_locks.get((folder.resolve(), threading.get_ident()))
    if lock is not None:
        lock.check()
    elif not folder.is_dir():
        raise FileNotFoundError(f"the output folder {folder} vanished during the run (deleted "
                                f"or moved); stopped before writing")  # fmt: skip


def _acquire(folder: Path) -> RunLock:
    path = folder / LOCK_NAME
    owner = {
        "pid": os.getpid(), "host": socket.gethostname(), "start": _proc_start(os.getpid()),
        "thread": threading.get_ident(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    for _ in range(100):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except PermissionError:
            raise PermissionError(
                f"output folder {folder} is not writable (permission denied); choose another"
            ) from None
        except FileExistsError:
            current = _read_owner(path)
            if current is None:  # just created by another process, or truncated by a crash
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > _EMPTY_LOCK_STALE_S:
                        _take_over(path, current)  # type: ignore[arg-type]
                        continue
                raise _busy(folder, path, None) from None
            if _is_stale(current):
                _take_over(path, current)
                continue
            raise _busy(folder, path, current) from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(owner))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            # A lock that could not be written (a full disk, a signal) is no lock: an empty
            # file left here would refuse every later run in this folder.
            path.unlink(missing_ok=True)
            raise
        return RunLock(folder, path, owner)
    raise _busy(folder, path, _read_owner(path))


def clean_stale_temporaries(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove the ``.NAME.*.tmp`` files that :func:`atomic_write` leaves when killed
    mid-write. Call it only while owning the folder (:func:`run_lock`): a live writer's
    temporary would go too. Returns the removed paths.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / ".last.pt.x1.tmp").write_bytes(b"")
    >>> [p.name for p in clean_stale_temporaries(d)]
    ['.last.pt.x1.tmp']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for p in sorted(found):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------
# Tables and their sidecars.


def table_record(path: str | os.PathLike, data: bytes, n_rows: int, columns: list) -> dict:
    """What a sidecar says of the table file ``path`` whose bytes are ``data``: its name,
    row count, columns and SHA-256 (checked by :func:`check_table` on every read).

    >>> table_record("t.csv", b"a\\n1\\n", 1, ["a"])["rows"]
    1
    """
    import hashlib

    return {"file": Path(path).name, "rows": int(n_rows), "columns": [str(c) for c in columns],
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


def check_table(path: str | os.PathLike, data: bytes, n_rows: int, columns: list,
                record: dict | None, sidecar: str | os.PathLike, *,
                pending: dict | None = None) -> None:  # fmt: skip
    """Refuse a table that does not match its sidecar's :func:`table_record`: another file
    name, row count, columns or content hash (a truncated, edited or replaced table, or a
    sidecar left by another result). The ValueError names the table and the sidecar.

    ``pending``: the record of a :func:`write_table` ``two_phase`` write in progress; a table
    matching it exactly (name, rows, columns, hash) is accepted too."""
    import hashlib

    if pending is not None and pending == table_record(path, data, n_rows, columns):
        return  # the write in progress reached its table; only its final sidecar is missing
    if record is None:
        raise ValueError(
            f"the sidecar {sidecar} of {path} holds no table record (row count and content "
            f"hash): it was not written with {Path(path).name}; re-run the measurement"
        )
    problems = []
    if record.get("file") != Path(path).name:
        problems.append(f"it describes {record.get('file')!r}")
    if record.get("rows") != n_rows:
        problems.append(f"{n_rows} rows in the table, {record.get('rows')} in the sidecar")
    if record.get("columns") != [str(c) for c in columns]:
        problems.append("the columns differ")
    if record.get("sha256") != hashlib.sha256(data).hexdigest():
        problems.append("the content hash differs")
    if problems:
        raise ValueError(
            f"{path} does not match its sidecar {sidecar} ({'; '.join(problems)}): the table "
            f"was truncated, edited or replaced after it was written; re-run the measurement "
            f"or restore both files"
        )

