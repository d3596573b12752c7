"""Where the units of a sweep execute: a local process pool, Ray, or SLURM (submitit).

Every backend has the signature ``backend(cfg_dicts, root, *, workers, on_result, **options)
-> list[outcome]`` (outcomes in the order of ``cfg_dicts``) and does one thing: call
:func:`execute_unit` for each unit somewhere. Because a unit is
a pure function of its config that writes atomically into its own hash folder, any backend
can resume what another started; the folder ``root`` must be visible to every worker (a
shared filesystem on a cluster).

* ``local``: ``workers`` processes (default: the number of usable cores), each with
  ``cores // workers`` torch/OpenMP threads so that they do not oversubscribe the CPU;
  ``workers=1`` runs the units one after the other in this process.
* ``ray``: one Ray task per unit with ``cpus_per_run`` CPUs (default 1), on the cluster at
  ``address`` (``"auto"``, ``"host:port"``) or, with no address, on a local Ray started and
  stopped here. Needs ``pip install 'diffeosense[ray]'``.
* ``slurm``: one SLURM array job via submitit (``partition``, ``time_min``, ``gpus``,
  ``cpus``, ``mem_gb``, ``array_parallelism``), from a machine with ``sbatch``;
  ``cluster="local"`` runs the same jobs as local subprocesses through submitit's local
  executor (what the tests use). Job logs go to ``root/_submitit/``. Needs ``pip install 'diffeosense[slurm]'``.

>>> sorted(BACKENDS)
['local', 'ray', 'slurm']
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "get_backend", "execute_unit", "local_backend", "ray_backend", "slurm_backend",
           "usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def execute_unit(cfg_dict: dict[str, Any], root: str, threads: int | None = None) -> dict[str, Any]:
    """Run one unit and never raise: what every backend calls (in a worker process, a Ray task
    or a SLURM job). ``cfg_dict`` is ``RunConfig.to_dict()`` (plain JSON travels anywhere).

    Returns ``{"hash", "status", "seconds", "error"}``: status ``"done"`` (ran now),
    ``"skipped"`` (already done), ``"elsewhere"`` (its folder is locked by another live
    process, e.g. a second sweep on the same root: not run here, not a failure; ``error``
    names the owner and the folder is left untouched), or ``"failed"`` (the traceback is
    written to ``error.txt`` in the run folder, and its last line is ``error``). SIGTERM
    during the run exits the process (status 143) after releasing the run's lock; the folder
    stays resumable.
    """
    # Imported here, not at the top: a spawned worker imports this module to find
    # _init_worker, which must set the thread count before torch is imported.
    from .._io import RunFolderBusy, write_text
    from .run import RunConfig, run, run_dir, run_status

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    t0 = time.perf_counter()
    cfg = RunConfig.from_dict(cfg_dict)
    folder = run_dir(cfg, root)
    out = {"hash": cfg.hash(), "status": "done", "seconds": 0.0, "error": None}
    if run_status(folder) == "done":
        out["status"] = "skipped"
        return out
    # SIGTERM (a SLURM time limit, `kill`, a stopping pool) exits through the finally blocks,
    # so the run's folder lock is released and another host can resume it; by default Python
    # would die on the spot and leave a lock that only this host can tell is stale.
    installed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_signal) if installed else None
    try:
        run(cfg, root)
    except RunFolderBusy as e:  # another live process works on it: leave its folder alone
        out.update(status="elsewhere", error=f"running elsewhere: {e}")
    except Exception as e:  # noqa: BLE001 - one failing run must not stop the sweep
        tb = traceback.format_exc()
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "error.txt", tb)
        out.update(status="failed", error=f"{type(e).__name__}: {e}")
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if _POOL_PARENT is not None and _SIGNALLED:
            # A pool worker told to stop (its driver stopped or died): the run has unwound and
            # released its lock; exit now rather than take the next queued unit.
            _exit_worker(128 + _SIGNALLED[0])
    out["seconds"] = time.perf_counter() - t0
    return out


_SIGNALLED: list[int] = []  # the signal that ended a unit in this process
_POOL_PARENT: int | None = None  # in a local pool worker: its driver's pid


def _exit_on_signal(signum: int, frame: Any) -> None:
    _SIGNALLED.append(signum)
    raise SystemExit(128 + signum)



def _failed(cfg_dict: dict[str, Any], root: str, err: BaseException) -> dict[str, Any]:
    """The outcome of a unit whose worker died (the unit itself never raises)."""
    import traceback

    from .._io import write_text
    from .run import RunConfig, run_dir

    cfg = RunConfig.from_dict(cfg_dict)
    folder = run_dir(cfg, root)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "error.txt", "".join(traceback.format_exception(err)))
    return {"hash": cfg.hash(), "status": "failed", "seconds": 0.0,
            "error": f"worker died: {type(err).__name__}: {err}"}


def _exit_worker(code: int) -> None:
    """End a pool worker now, with the clean-up a normal exit of a multiprocessing child runs
    (its finalizers: e.g. tqdm's semaphore, which the resource tracker would otherwise report
    as leaked)."""
    from multiprocessing import util

    try:
        util._exit_function()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _init_worker(threads: int, parent: int | None = None) -> None:
    """A local pool worker's setup: threads, Ctrl-C left to the driver, and death with it."""
    global _POOL_PARENT
    # Before torch is imported in the fresh (spawned) worker, so OpenMP starts with it too.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    # Ctrl-C reaches the whole process group: the driver alone handles it (and stops the
    # workers with SIGTERM, which unwinds each run and releases its folder's lock).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _POOL_PARENT = parent
        _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


def _die_with_parent(parent: int) -> None:
    """Stop this worker (SIGTERM: the running unit unwinds, releasing its lock) when the
    driver ``parent`` dies, even by SIGKILL: Linux's parent-death signal at once, and a
    watchdog thread (every platform, and a driver that died before the signal was set)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass  # the watchdog below still stops it

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # a unit that does not unwind in a minute: end it anyway
        _exit_worker(128 + signal.SIGTERM)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="diffeosense-parent-watch", daemon=True).start()


def _stop_workers(procs: list[Any], timeout_s: float = 60.0) -> None:
    """SIGTERM every worker process in ``procs`` and wait for it: each running unit unwinds
    (its lock released, its folder resumable) and the worker exits."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def local_backend(
    cfg_dicts: list[dict[str, Any]], root: str, *, workers: int | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the units on a bounded pool of ``workers`` local processes (spawned, so they
    never inherit a half-initialized thread pool); ``workers=1``: in this process.

    The workers die with this process: when it is killed (even by SIGKILL) each worker gets
    SIGTERM (Linux's parent-death signal, and a watchdog thread elsewhere), so its running
    unit unwinds, releases its folder's lock and stays resumable. On Ctrl-C (or any error
    here) the workers are stopped the same way before the exception goes on."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    cores = usable_cores()
    workers = cores if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, max(1, len(cfg_dicts)))
    outcomes: list[dict[str, Any] | None] = [None] * len(cfg_dicts)
    if workers == 1:
        for i, d in enumerate(cfg_dicts):
            outcomes[i] = execute_unit(d, root)
            if on_result is not None:
                on_result(outcomes[i])
        return outcomes  # type: ignore[return-value]
    threads = max(1, cores // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
        try:
            futures = {pool.submit(execute_unit, d, root, threads): i
                       for i, d in enumerate(cfg_dicts)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    outcomes[i] = fut.result()
                except Exception as e:  # noqa: BLE001 - the worker process died (killed, OOM)
                    outcomes[i] = _failed(cfg_dicts[i], root, e)
                if on_result is not None:
                    on_result(outcomes[i])
        except BaseException:  # Ctrl-C, SIGTERM of the driver, an error in on_result
            _stop_workers(list((getattr(pool, "_processes", None) or {}).values()))
            # The pool sees its workers gone, fails the other futures and cleans its queues
            # (nothing is left for the resource tracker to warn about).
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return outcomes  # type: ignore[return-value]


def _missing_extra(extra: str, package: str) -> ValueError:
    return ValueError(f"the {extra} backend needs {package}, which is not installed: "
                      f"pip install 'diffeosense[{extra}]'")


def ray_backend(
    cfg_dicts: list[dict[str, Any]], root: str, *, workers: int | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    address: str | None = None, cpus_per_run: int = 1,
) -> list[dict[str, Any]]:
    """One Ray task per unit (``num_cpus=cpus_per_run``, as many torch threads); connects to
    ``address`` or starts a local Ray for the sweep. ``workers`` is ignored: Ray schedules
    as many tasks as the cluster's CPUs allow."""
    try:
        import ray
    except ImportError:
        raise _missing_extra("ray", "Ray") from None
    if cpus_per_run < 1:
        raise ValueError(f"cpus_per_run must be >= 1, got {cpus_per_run}")
    started = not ray.is_initialized()
    if started and address not in (None, "auto", "local"):
        _check_reachable(address)
    if started:
        kw: dict[str, Any] = {}
        if _is_loopback(address):
            # A Ray on this machine (started here, or a head on 127.x): keep the driver on the
            # loopback too. Left alone, Ray registers the driver under the machine's network
            # address and its processes talk to each other through that interface.
            kw["_node_ip_address"] = "127.0.0.1"
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **kw)
        except ConnectionError as e:
            raise ValueError(f"cannot reach the Ray cluster at {address!r} ({e}); start one "
                             f"with `ray start --head` or leave --address out") from None
    try:
        task = ray.remote(num_cpus=cpus_per_run, max_retries=0)(execute_unit)
        refs = {task.remote(d, root, cpus_per_run): i for i, d in enumerate(cfg_dicts)}
        outcomes: list[dict[str, Any] | None] = [None] * len(cfg_dicts)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = refs[ref]
                try:
                    outcomes[i] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the worker died
                    outcomes[i] = _failed(cfg_dicts[i], root, e)
                if on_result is not None:
                    on_result(outcomes[i])
    finally:
        if started:
            ray.shutdown()
    return outcomes  # type: ignore[return-value]


def _is_loopback(address: str | None) -> bool:
    """Whether ``address`` (None/"local": a Ray started here) is on this machine's loopback.

    >>> [_is_loopback(a) for a in (None, "local", "127.0.0.1:6379", "localhost:1", "10.0.0.5:6379", "auto")]
    [True, True, True, True, False, False]
    """
    if address in (None, "local"):
        return True
    host = address.removeprefix("ray://").rpartition(":")[0]
    return host == "localhost" or host.startswith("127.")


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (ray.init would retry for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not 'host:port' (or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ValueError(f"cannot reach the Ray cluster at {address!r} ({e}); start one with "
                         f"`ray start --head` or leave --address out") from None


def slurm_backend(
    cfg_dicts: list[dict[str, Any]], root: str, *, workers: int | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    partition: str | None = None, time_min: int = 60, gpus: int = 0, cpus: int = 1,
    mem_gb: float | None = None, array_parallelism: int | None = None,
    cluster: str | None = None,
) -> list[dict[str, Any]]:
    """One SLURM array job (a task per unit) through submitit, and wait for it.

    ``partition``, ``time_min`` (the job's time limit), ``gpus`` (per task), ``cpus`` (per
    task, also its torch threads), ``mem_gb`` and ``array_parallelism`` (tasks running at
    once; default ``workers``) map to sbatch options; ``cluster``: ``"slurm"``
    (default; needs ``sbatch``) or ``"local"`` (submitit's local executor, same
    semantics, for testing). A task killed by its time limit leaves a resumable folder:
    submit the sweep again.
    """
    try:
        import submitit
    except ImportError:
        raise _missing_extra("slurm", "submitit") from None
    import shutil

    from submitit.helpers import as_completed

    cluster = cluster or "slurm"
    if cluster not in ("slurm", "local"):
        raise ValueError(f"cluster must be 'slurm' or 'local', got {cluster!r}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("the slurm backend found no `sbatch` on this machine: run the sweep "
                         "from a SLURM login node, or pass cluster='local' (--cluster local) "
                         "to run the same jobs here")
    ex = submitit.AutoExecutor(folder=Path(root) / "_submitit" / "%j", cluster=cluster)
    params: dict[str, Any] = {"timeout_min": int(time_min), "cpus_per_task": int(cpus),
                              "gpus_per_node": int(gpus), "name": "diffeosense-sweep"}
    if mem_gb is not None:
        params["mem_gb"] = mem_gb
    if partition is not None:
        params["slurm_partition"] = partition
    parallel = array_parallelism or workers
    if parallel is not None:
        params["slurm_array_parallelism"] = int(parallel)
    ex.update_parameters(**params)
    n = len(cfg_dicts)
    jobs = ex.map_array(execute_unit, cfg_dicts, [root] * n, [int(cpus)] * n)
    index = {job.job_id: i for i, job in enumerate(jobs)}
    outcomes: list[dict[str, Any] | None] = [None] * n
    # The local executor's jobs are cheap to poll; SLURM's are polled through sacct.
    for job in as_completed(jobs, poll_frequency=1 if ex.cluster == "local" else 10):
        i = index[job.job_id]
        try:
            outcomes[i] = job.result()
        except Exception as e:  # noqa: BLE001 - the job died (time limit, node failure)
            outcomes[i] = _failed(cfg_dicts[i], root, e)
        if on_result is not None:
            on_result(outcomes[i])
    return outcomes  # type: ignore[return-value]


BACKENDS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "local": local_backend, "ray": ray_backend, "slurm": slurm_backend,
}


def get_backend(name: str) -> Callable[..., list[dict[str, Any]]]:
    """The backend called ``name`` (one of :data:`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]
