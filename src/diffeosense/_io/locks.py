"""Run folders that one process at a time owns.

:func:`run_lock` makes a run folder exclusive: a lock file holding the owner's pid, host
and process start time, created with ``O_EXCL``; a lock whose process is gone (same host)
is stale and taken over; a live one makes the second user fail with :class:`RunFolderBusy`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "RunFolderBusy", "RunLock", "run_lock", "check_run_folder",
           "clean_stale_temporaries", "check_output_path", "made_folder"]


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
    Errors on a folder that is a file or not writable are raised here, before any work; a
    folder created here is removed again when the block fails and leaves it empty.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with run_lock(d) as lock:
    ...     lock.path.name
    '.diffeosense.lock'
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output folder {folder} is a file; choose a folder")
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
    # A command that fails before writing anything leaves no empty folder behind.
    with made_folder(folder):
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


@contextlib.contextmanager
def made_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Create ``folder`` (and its missing parents) for the ``with`` block; if the block
    raises (or is interrupted), remove again those of them that are still empty, so a failed
    command leaves no empty output folder behind. Folders that existed before are never
    touched, nor is anything that holds a file.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "a" / "b"
    >>> try:
    ...     with made_folder(d):
    ...         raise ValueError("bad input")
    ... except ValueError:
    ...     pass
    >>> d.parent.exists()
    False
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for p in created:
            try:
                p.rmdir()  # only an empty folder goes
            except OSError:
                break
        raise


def check_output_path(path: str | os.PathLike, *, kind: str = "folder",
                      flag: str = "--out") -> Path:
    """Check an output path as the user gave it, before anything is printed or made:
    ``kind="folder"``: not an existing file; ``kind="file"``: not an existing folder; and in
    both cases no part of the path above it is a file. Raises ``NotADirectoryError`` /
    ``IsADirectoryError`` naming ``flag`` and ``path``; returns ``Path(path)``.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "afile"; _ = f.write_text("x")
    >>> check_output_path(f / "sub")
    Traceback (most recent call last):
    ...
    NotADirectoryError: --out ... is not a folder: ...afile is a file
    """
    p = Path(path)
    if kind not in ("folder", "file"):
        raise ValueError(f"kind must be 'folder' or 'file', got {kind!r}")
    if kind == "folder" and p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file, not a folder; choose a folder")
    if kind == "file" and p.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; give a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{flag} {path} is not a {kind}: {parent} is a file")
            break
    return p


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
