"""Sweeps as data: a declarative config file expands into :class:`~.run.RunConfig` units.

A sweep file (TOML, or YAML when ``pyyaml`` is installed) has these tables; any other key is
refused with the list of valid ones, as every value is checked by the config dataclasses
(:func:`diffeosense._io.dataclass_from_dict`)::

    out = "runs/my-sweep"            # optional: the sweep root (``--out`` overrides)

    [grid]                           # the cartesian product of these lists is the sweep
    model = ["simplecnn", "fc2"]     #   train.model
    dataset = ["mnist-embedded"]     #   train.data.name
    seed = [0, 1]                    #   train.seed (initialization and batch order)
    noise = [0.0, 1.0]               #   train.data.noise (training corruption, L2 norm)
    P = [500]                        #   train.data.P (training-set size)
    epochs = [2]                     #   train.epochs
    lr = [0.01]                      #   train.lr
    # any other TrainConfig field as "train.<field>", DataConfig as "train.data.<field>",
    # RunConfig measurement field by name ("layers", "channels", "views", "shuffled",
    # "n_probes", "probe_noise", "stages", "perturbation", "measure_kwargs") or
    # "measure.<field>"

    [train]                          # fixed TrainConfig fields (batch_size, optimizer, ...)
    batch_size = 64
    [data]                           # fixed DataConfig fields (noise_on, augment, ...)
    noise_on = "both"
    [measure]                        # fixed RunConfig measurement fields
    layers = "all"
    stages = ["init", "trained"]
    n_probes = 200
    [model_kwargs.simplecnn]         # create_model keyword arguments, per model name
    depth = 2
    width = 8

Runs are the grid's product in file order (the last axis varying fastest); identical configs
are run once. Each unit lands in ``root / RunConfig.hash()`` (:func:`.run.run`).

>>> spec = parse_sweep({"grid": {"model": ["fc2", "simplecnn"], "seed": [0, 1]},
...                     "data": {"P": 100}, "measure": {"n_probes": 50}})
>>> cfgs = expand(spec)
>>> [(c.train.model, c.train.seed) for c in cfgs]
[('fc2', 0), ('fc2', 1), ('simplecnn', 0), ('simplecnn', 1)]
>>> cfgs[0].train.data.P, cfgs[0].n_probes
(100, 50)
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import dataclass_from_dict, write_json
from .run import RunConfig, run_dir, run_problem, run_status

__all__ = [
    "SweepConfig", "GRID_ALIASES", "load_sweep", "parse_sweep", "expand", "plan",
    "run_sweep", "SweepReport", "outcome_printer",
]

# Short names of the grid axes -> where they go in the RunConfig dict.
GRID_ALIASES = {
    "model": ("train", "model"),
    "dataset": ("train", "data", "name"),
    "seed": ("train", "seed"),
    "noise": ("train", "data", "noise"),
    "P": ("train", "data", "P"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
}
_MEASURE_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "train")


@dataclass
class SweepConfig:
    """A sweep file, parsed (see the module docstring for each table)."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    measure: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    out: str | None = None


def _axis_path(key: str) -> tuple[str, ...]:
    if key in GRID_ALIASES:
        return GRID_ALIASES[key]
    if key in _MEASURE_FIELDS:
        return (key,)
    parts = tuple(key.split("."))
    if parts[0] == "measure" and len(parts) == 2 and parts[1] in _MEASURE_FIELDS:
        return parts[1:]
    if parts[0] == "train" and len(parts) >= 2:
        return parts
    raise ValueError(
        f"unknown grid axis {key!r}; use one of {sorted(GRID_ALIASES)}, a measurement field "
        f"{list(_MEASURE_FIELDS)}, 'train.<TrainConfig field>' or 'train.data.<DataConfig field>'"
    )


def parse_sweep(d: dict[str, Any]) -> SweepConfig:
    """Check a sweep dict (as read from TOML/YAML) and return its :class:`SweepConfig`.

    Unknown tables, grid axes or fields raise ``ValueError`` naming the valid ones; every
    unit is built once here so that a bad value fails before anything runs.
    """
    if not isinstance(d, dict):
        raise ValueError(f"a sweep file must hold a table/mapping, got {type(d).__name__}")
    spec = dataclass_from_dict(SweepConfig, d)
    for key, values in spec.grid.items():
        _axis_path(key)
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key} must be a non-empty list of values, got {values!r}")
    for name in ("train", "data", "measure", "model_kwargs"):
        if not isinstance(getattr(spec, name), dict):
            raise ValueError(f"[{name}] must be a table of fields")
    bad = set(spec.measure) - set(_MEASURE_FIELDS)
    if bad:
        raise ValueError(f"unknown [measure] keys {sorted(bad)}; valid: {list(_MEASURE_FIELDS)}")
    if "data" in spec.train:
        raise ValueError("put DataConfig fields in the [data] table, not in [train]")
    units = expand(spec)  # builds (hence validates) every unit
    if not spec.grid:
        # Without a grid the sweep is one run of the defaults of every field not given: a
        # forgotten [grid] would silently train 10 epochs on all the data. One run is asked
        # for explicitly, with a one-point grid.
        t = units[0].train
        raise ValueError(
            f"the sweep has no [grid] table: it would run a single run with the defaults of "
            f"every field not given (model {t.model}, dataset {t.data.name}, "
            f"{t.epochs} epochs, P {t.data.P if t.data.P is not None else 'all'}, "
            f"{units[0].n_probes} probes); add the grid, or for exactly that one run a "
            f"one-point grid: [grid] seed = [{t.seed}]")
    return spec


def load_sweep(path: str | Path) -> SweepConfig:
    """Read a sweep file: ``.toml`` (stdlib ``tomllib``) or ``.yaml``/``.yml`` (``pyyaml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep file {path}")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            d = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path} is not valid TOML: {e}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: YAML sweep files need pyyaml (pip install pyyaml); or "
                             f"write the sweep in TOML") from None
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from None
    else:
        raise ValueError(f"unknown sweep file type {path.suffix!r}: use .toml (or .yaml)")
    try:
        return parse_sweep(d)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None


def _set(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = copy.deepcopy(value)


def expand(spec: SweepConfig) -> list[RunConfig]:
    """The runs of a sweep: one :class:`RunConfig` per point of the grid (duplicates once)."""
    axes = list(spec.grid.items())
    out: list[RunConfig] = []
    seen: set[str] = set()
    for point in itertools.product(*(values for _, values in axes)):
        d: dict[str, Any] = {"train": {**copy.deepcopy(spec.train),
                                       "data": copy.deepcopy(spec.data)},
                             **copy.deepcopy(spec.measure)}
        for (key, _), value in zip(axes, point, strict=True):
            _set(d, _axis_path(key), value)
        model = d["train"].get("model", "simplecnn")
        if model in spec.model_kwargs:
            d["train"]["model_kwargs"] = {**copy.deepcopy(spec.model_kwargs[model]),
                                          **d["train"].get("model_kwargs", {})}
        try:
            cfg = RunConfig.from_dict(d)
        except TypeError as e:  # a wrongly typed value deep inside a dataclass
            raise ValueError(f"invalid run config {json.dumps(d, default=str)}: {e}") from None
        h = cfg.hash()
        if h not in seen:
            seen.add(h)
            out.append(cfg)
    return out


def plan(configs: list[RunConfig], root: str | Path) -> list[dict[str, Any]]:
    """What ``--dry-run`` prints: per run ``{"hash", "folder", "status", "problem", "model",
    "dataset", "seed", "noise", "P", "epochs", "lr"}`` with ``status`` from
    :func:`.run.run_status` and, for a partial or failed run, ``problem``: its first damaged
    file and why (:func:`.run.run_problem`; None when every file reads)."""
    rows = []
    for cfg in configs:
        folder = run_dir(cfg, root)
        t = cfg.train
        status = run_status(folder)
        problem = run_problem(folder) if status in ("partial", "failed") else None
        rows.append({"hash": cfg.hash(), "folder": str(folder), "status": status,
                     "problem": problem,
                     "model": t.model, "dataset": t.data.name, "seed": t.seed,
                     "noise": t.data.noise, "P": t.data.P, "epochs": t.epochs, "lr": t.lr})
    return rows


@dataclass
class SweepReport:
    """What :func:`run_sweep` returns: one outcome per unit (see
    :func:`~diffeosense.experiments.backends.execute_unit`)."""

    root: Path
    outcomes: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o["status"] == "failed"]

    def raise_if_failed(self, configs: list[RunConfig], what: str,
                        describe: Any = None) -> None:
        """After every unit ran: ``RuntimeError`` naming the failed units of ``configs`` (in
        the order of :attr:`outcomes`) by ``describe(config)`` and their ``error.txt``, or
        (none failed) the units another live process holds; the finished units are kept, and
        running again retries only the failed ones."""
        describe = describe or (lambda c: c.hash())
        failed = [f"{describe(c)} ({run_dir(c, self.root) / 'error.txt'})"
                  for c, o in zip(configs, self.outcomes, strict=True) if o["status"] == "failed"]
        if failed:
            raise RuntimeError(f"{len(failed)} unit(s) of {what} failed: {'; '.join(failed)}; "
                               f"the others are kept: run again to retry")
        away = [f"{describe(c)} ({run_dir(c, self.root)})"
                for c, o in zip(configs, self.outcomes, strict=True) if o["status"] == "elsewhere"]
        if away:  # not failures, but what follows needs every unit
            raise RuntimeError(f"{len(away)} unit(s) of {what} are running in another live "
                               f"process (another run of the same command?): {'; '.join(away)}; "
                               f"the others are kept: run again once it finished")

    @property
    def elsewhere(self) -> list[dict[str, Any]]:
        """The units another live process held (a second sweep on the same root): not run
        here and not failed; their folder's owner finishes them."""
        return [o for o in self.outcomes if o["status"] == "elsewhere"]

    def counts(self) -> dict[str, int]:
        c = {"done": 0, "skipped": 0, "failed": 0, "elsewhere": 0}
        for o in self.outcomes:
            c[o["status"]] += 1
        return c


def outcome_printer(label: str = "run", enabled: bool = True):
    """An ``on_result`` for :func:`run_sweep` printing one line per unit
    (``  run <hash>: done (12 s)``, with the error of a failed one); None when disabled."""
    if not enabled:
        return None

    def say(o: dict[str, Any]) -> None:
        print(f"  {label} {o['hash']}: {o['status']} ({o['seconds']:.0f} s)"
              + (f" {o['error']}" if o.get("error") else ""), flush=True)

    return say


def run_sweep(
    configs: list[RunConfig],
    root: str | Path,
    backend: str = "local",
    *,
    workers: int | None = None,
    on_result: Any = None,
    **backend_options: Any,
) -> SweepReport:
    """Run every unit of a sweep into ``root`` and return a :class:`SweepReport`.

    Finished units are skipped, interrupted ones resume from their checkpoints, a unit that
    raises is recorded (``error.txt`` in its folder) and the others go on; a unit whose
    folder another live process holds (a second sweep on the same root) is left to it and
    reported as ``"elsewhere"``, not as a failure.

    Args:
        configs: the units (e.g. ``expand(load_sweep(path))``).
        root: the sweep folder; unit ``c`` writes into ``root / c.hash()``.
        backend: ``"local"`` (a process pool of ``workers``), ``"ray"`` (options ``address``)
            or ``"slurm"`` (options ``partition``, ``time_min``, ``gpus``, ``cpus``,
            ``array_parallelism``, ``cluster``); see :mod:`diffeosense.experiments.backends`.
        workers: concurrent units (local: default the number of cores; each worker gets
            ``cores // workers`` torch threads).
        on_result: called with each outcome as it arrives (progress printing).

    ``root/sweep.json`` records the units, their outcomes and the provenance.
    """
    from .._io import made_folder
    from . import backends

    runner = backends.get_backend(backend)
    root = Path(root)
    # A sweep that fails before any unit wrote (a backend that cannot start) leaves no empty
    # root behind.
    with made_folder(root):
        return _run_sweep(configs, root, backend, runner, workers, on_result, backend_options)


def _run_sweep(configs, root, backend, runner, workers, on_result, backend_options):
    from ..provenance import provenance

    # Finished units are not dispatched at all (execute_unit checks again, for races).
    outcomes: list[dict[str, Any] | None] = [None] * len(configs)
    todo = []
    for i, c in enumerate(configs):
        if run_status(run_dir(c, root)) == "done":
            outcomes[i] = {"hash": c.hash(), "status": "skipped", "seconds": 0.0, "error": None}
            if on_result is not None:
                on_result(outcomes[i])
        else:
            todo.append(i)
    if todo:
        ran = runner([configs[i].to_dict() for i in todo], str(root), workers=workers,
                     on_result=on_result, **backend_options)
        for i, o in zip(todo, ran, strict=True):
            outcomes[i] = o
    report = SweepReport(root, outcomes)  # type: ignore[arg-type]
    write_json(root / "sweep.json", {"backend": backend, "counts": report.counts(),
                                     "outcomes": outcomes, "provenance": provenance()})
    return report
