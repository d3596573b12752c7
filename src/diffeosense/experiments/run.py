"""One unit of a sweep: train a net, measure D, G and R, write everything into a hash folder.

``run(cfg, root)`` is a pure function of its :class:`RunConfig`. It trains with
:func:`diffeosense.train.train` (``resume=True``: a run killed at any moment continues from
its last checkpoint) and measures the checkpoints with :func:`diffeosense.sensitivity.measure`;
it has no loop of its own. Every file is written atomically, and the ``done`` marker last, so a
folder either holds a finished run (``done`` present) or a resumable partial one.

Run folder ``root / cfg.hash()`` (the hash of the config without the keys that do not change
the results: ``train.device``, ``train.data.root``, ``train.data.download``; and without the
fields added later, such as ``train.data.resize``, where they hold their defaults, so that
earlier runs keep their folders; a dataset's path, part of its spec ``train.data.name``, is
hashed as written)::

    run_config.json                the RunConfig, its hash, provenance (written first)
    attempts.json                  {"attempts": n}: how many times ``run`` started this unit
    train/                         the training run (config.json, metrics.jsonl, checkpoints/)
    sensitivity_<stage>.csv        one tidy table per stage (init, trained, best) ...
    sensitivity_<stage>_shuffled<k>.csv   ... and per channel-shuffled copy (``shuffled``)
    sensitivity_<stage>.meta.json  ... with its sidecar (measure config, provenance, run hash)
    error.txt                      the traceback of the last failed attempt (sweep runner)
    .diffeosense.lock              while a process works on the run (``_io.run_lock``)
    done                           JSON: hash, stages, test error, time; written last

>>> from diffeosense.train import TrainConfig
>>> from diffeosense.data import DataConfig
>>> cfg = RunConfig(train=TrainConfig(model="fc2", data=DataConfig(P=100), epochs=1))
>>> cfg.hash() == RunConfig.from_dict(cfg.to_dict()).hash()
True
>>> cfg.hash() == RunConfig(**{**cfg.__dict__, "seed": 1}).hash()
False
>>> run_status(run_dir(cfg, "/nonexistent"))
'new'
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import dataclass_from_dict, to_jsonable, write_json
from ..data.datasets import DATA_LATER_DEFAULTS
from ..provenance import config_hash, provenance
from ..train import TRAIN_LATER_DEFAULTS, TrainConfig

__all__ = [
    "RunConfig", "run", "run_in", "run_dir", "run_status", "run_problem", "load_run", "STAGES",
    "STATUSES",
]

STAGES = ("init", "trained", "best")
# What ``run_status`` says about a folder: finished; started and not finished (resumable);
# last attempt raised (``error.txt``, also resumable); never started.
STATUSES = ("done", "partial", "failed", "new")
_CHECKPOINT = {"init": "init.pt", "trained": "last.pt", "best": "best.pt"}
# Where a run executes, not what it computes: left out of the folder hash.
_HASH_FREE = {("train", "device"), ("train", "data", "root"), ("train", "data", "download")}
# Fields added after runs were made (a path of keys), left out of the hash at these values
# so that the folders of those runs are still found.
_LATER_DEFAULTS = {("probe_order",): "split", ("views",): None, ("track",): None,
                   **{("train", "data", k): v for k, v in DATA_LATER_DEFAULTS.items()},
                   **{("train", k): v for k, v in TRAIN_LATER_DEFAULTS.items()}}
PROBE_ORDERS = ("split", "balanced")
VIEWS = ("full", "channel", "channel-mean")
# measure()'s own arguments that RunConfig sets itself: not allowed in measure_kwargs.
_MEASURE_OWN = {"model", "data", "layers", "perturbation", "n_probes", "seed", "generator",
                "channels", "device", "progress", "meta", "probe_noise", "config"}


@dataclass
class RunConfig:
    """Everything one run depends on: what to train, and what to measure on it.

    Attributes:
        train: the :class:`~diffeosense.train.TrainConfig` (model, data with P and training
            noise, epochs, lr, seed, ...).
        layers: what ``measure`` taps: ``"output"`` (the output alone), ``"all"``, a kind
            preset (``"conv+activation"``) or a list of layer names.
        stages: which weights to measure: ``"init"`` (``checkpoints/init.pt``), ``"trained"``
            (the final weights, ``last.pt``), ``"best"`` (best test error, ``best.pt``).
        channels: also the channel-resolved and channel-mean views (rows ``view == "channel"``
            and ``"channel-mean"``).
        views: the views the saved tables keep (among ``"full"``, ``"channel"``,
            ``"channel-mean"``); ``None``: all that were measured. ``["full",
            "channel-mean"]`` drops the per-channel rows, C times the others.
        n_probes: probe images: ``n_probes`` of ``probe_split``, in ``probe_order``;
            ``None``: all of them (``"balanced"``: twice the smaller class).
        probe_split: ``"test"`` or ``"train"`` (the normalized images of the dataset).
        probe_order: ``"split"``: the first ``n_probes`` of the split in its order;
            ``"balanced"``: taken alternately from the two classes of a task labelled +-1
            (:func:`diffeosense.probes.balanced_probes`, the scale-detection
            experiments' probes).
        probe_noise: L2 norm ``s`` of the Gaussian corruption of every probe,
            ``x -> x + s xi / ||xi||``, given to ``measure(probe_noise=s)`` (which draws it
            from each probe's own generator, so every stage sees the same corrupted probes);
            ``"train"``: the training noise ``train.data.noise`` (how nets trained with noise
            are measured).
        perturbation: the diffeo (or any registered perturbation) given to ``measure``.
        seed: the measurement seed (diffeos, noise, probe corruption); the same for every
            stage, so init and trained are compared on the same probes, diffeos and noise.
        shuffled: number K of channel-shuffled copies measured beside each stage
            (:func:`diffeosense.pooling.shuffle_channels`: every convolution's input channels
            permuted, one seeded permutation per layer, copy k seeded as in
            :func:`~diffeosense.pooling.pooling_report`), on the same probes, diffeos and
            noise; tables ``sensitivity_<stage>_shuffled<k>.csv``.
        measure_kwargs: further keyword arguments of :func:`~diffeosense.sensitivity.measure`
            (``batch_size``, ``statistic``, ``denominator``, ``noise_match``, ...); names are
            checked against ``measure``'s signature.
        track: ``None`` (no tracking) or the fields of a
            :class:`~diffeosense.tracking.TrackConfig` (stored complete): ``train`` gets a
            ``SensitivityTracker`` and writes ``train/track.csv`` (D, G, R of every layer at
            the tracked epochs, measured while training; the demo's tracking table).
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    layers: Any = "output"
    stages: list[str] = field(default_factory=lambda: ["init", "trained"])
    channels: bool = False
    views: list[str] | None = None
    n_probes: int | None = 500
    probe_split: str = "test"
    probe_order: str = "split"
    probe_noise: float | str = 0.0
    perturbation: str = "diffeo"
    seed: int = 0
    measure_kwargs: dict[str, Any] = field(default_factory=dict)
    shuffled: int = 0
    track: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from ..sensitivity import measure

        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict(self.train)
        self.stages = list(self.stages)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages must be distinct names among {STAGES}, got {self.stages}")
        if self.probe_split not in ("test", "train"):
            raise ValueError(f"probe_split must be 'test' or 'train', got {self.probe_split!r}")
        if self.probe_order not in PROBE_ORDERS:
            raise ValueError(f"probe_order must be one of {PROBE_ORDERS}, got "
                             f"{self.probe_order!r}")
        if isinstance(self.probe_noise, str):
            if self.probe_noise != "train":
                raise ValueError(f"probe_noise must be an L2 norm >= 0 or 'train' (the training "
                                 f"noise), got {self.probe_noise!r}")
        elif not self.probe_noise >= 0:
            raise ValueError(f"probe_noise must be >= 0, got {self.probe_noise}")
        if isinstance(self.shuffled, bool) or not isinstance(self.shuffled, int) \
                or self.shuffled < 0:
            raise ValueError(f"shuffled must be a number of copies >= 0, got {self.shuffled!r}")
        if self.n_probes is not None and self.n_probes < 2:
            raise ValueError(f"n_probes must be >= 2 (or None: all of the split), got "
                             f"{self.n_probes}")
        if self.views is not None:
            self.views = list(self.views)
            bad = [v for v in self.views if v not in VIEWS]
            if bad or not self.views or len(set(self.views)) != len(self.views):
                raise ValueError(f"views must be distinct names among {VIEWS} (or None: all), "
                                 f"got {self.views}")
            if not self.channels and set(self.views) != {"full"}:
                raise ValueError(f"views {self.views} need channels=True (without it only the "
                                 f"'full' view is measured)")
        if self.track is not None:
            from ..tracking import TrackConfig

            try:
                self.track = asdict(TrackConfig(**self.track))
            except TypeError as e:
                raise ValueError(f"track must hold TrackConfig fields: {e}") from None
        params = set(inspect.signature(measure).parameters) - _MEASURE_OWN
        unknown = set(self.measure_kwargs) - params
        if unknown:
            raise ValueError(f"unknown measure_kwargs {sorted(unknown)}; valid: {sorted(params)} "
                             f"(layers, perturbation, n_probes, seed, channels and probe_noise are "
                             f"RunConfig fields; a MeasureConfig's other fields go here one by one)")

    @property
    def probe_noise_value(self) -> float:
        """The resolved probe corruption norm (``"train"`` -> ``train.data.noise``)."""
        return float(self.train.data.noise if self.probe_noise == "train" else self.probe_noise)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; unknown keys (here or in ``train``/``train.data``)
        raise ``ValueError``."""
        return dataclass_from_dict(cls, dict(d))

    def hash(self) -> str:
        """12 hex digits naming the run folder: ``config_hash`` of :meth:`to_dict` without
        the keys that only say where the run executes (device, data root, download)."""
        d = copy.deepcopy(self.to_dict())
        for path, default in _LATER_DEFAULTS.items():
            node = d
            for k in path[:-1]:
                node = node[k]
            if node.get(path[-1], default) == default:
                node.pop(path[-1], None)
        for path in _HASH_FREE:
            node = d
            for k in path[:-1]:
                node = node[k]
            node.pop(path[-1], None)
        return config_hash(d)


def run_dir(cfg: RunConfig, root: str | Path) -> Path:
    """The folder of ``cfg`` under a sweep root: ``root / cfg.hash()``."""
    return Path(root) / cfg.hash()


def run_status(folder: str | Path) -> str:
    """``"done"`` (``done`` marker), ``"failed"`` (``error.txt`` from the last attempt),
    ``"partial"`` (started: resumable) or ``"new"`` (no folder)."""
    folder = Path(folder)
    if (folder / "done").is_file():
        return "done"
    if (folder / "error.txt").is_file():
        return "failed"
    return "partial" if folder.is_dir() and any(folder.iterdir()) else "new"


def run_problem(folder: str | Path) -> str | None:
    """The first damaged file of a started run, and why, without running it (what
    ``sweep --dry-run`` shows beside a partial run); None when every file reads.

    Checks the JSON records (``run_config.json``, ``attempts.json``, ``train/config.json``),
    the checkpoints (a ``.pt`` is a zip archive: a truncated one has no central directory)
    and the measured tables against their sidecars. A damaged checkpoint makes the real run
    fail (``train`` refuses it) until the file is removed: it is then retrained from the last
    good one.
    """
    import zipfile

    from .._io import sidecar_path

    folder = Path(folder)
    for name in ("run_config.json", "attempts.json", "train/config.json"):
        path = folder / name
        if path.is_file():
            try:
                json.loads(path.read_text())
            except (OSError, ValueError) as e:
                return f"{path} is damaged (not valid JSON: {e})"
    ckdir = folder / "train" / "checkpoints"
    for path in sorted(ckdir.glob("*.pt")) if ckdir.is_dir() else []:
        try:
            with zipfile.ZipFile(path) as z:
                z.namelist()
        except (OSError, zipfile.BadZipFile) as e:
            return f"{path} is damaged (truncated or not a checkpoint: {e})"
    for path in sorted(folder.glob("sensitivity_*.csv")):
        if sidecar_path(path).is_file():
            from ..sensitivity import SensitivityResult

            try:
                SensitivityResult.load(path)
            except (OSError, ValueError) as e:
                return f"{path} is damaged ({' '.join(str(e).split())})"
    return None


def run(cfg: RunConfig, root: str | Path, *, progress: bool = False) -> Path:
    """Train and measure ``cfg`` into ``run_dir(cfg, root)``; returns that folder.

    Steps (each skipped when its atomic output already exists, so a re-run after a kill
    resumes and a finished run costs nothing):

    1. ``train(cfg.train, folder / "train", resume=True)``: checkpoints ``init.pt``,
       ``last.pt``, ``best.pt`` (:mod:`diffeosense.train`).
    2. For each stage in ``cfg.stages`` (and each of its ``shuffled`` copies): load the
       stage's checkpoint and
       ``measure(model, probes, layers, perturbation, n_probes, seed=cfg.seed, channels,
       **measure_kwargs)``, with probes ``n_probes`` images of ``probe_split`` (``probe_order``)
       (corrupted by ``probe_noise``); the rows of ``views`` kept; saved as
       ``sensitivity_<stage>.csv`` + sidecar, whose config holds ``run``, ``stage``, ``copy``,
       ``epoch`` and the test error.
    3. ``done``: JSON ``{"hash", "stages", "tables", "test_error", "train_error",
       "epochs_run", "time"}``, written last.

    The run holds its folder with :func:`diffeosense._io.run_lock` while it works: a second
    process running the same config meanwhile gets :class:`~diffeosense._io.RunFolderBusy`.

    The tables hold, per layer (x view x channel), ``D = E||f(tau x) - f(x)||^2 /
    E||f(x1) - f(x2)||^2``, ``G`` (same with matched noise) and ``R = D / G`` (see
    :func:`~diffeosense.sensitivity.measure`). Use :func:`load_run` or
    :func:`diffeosense.experiments.collect.collect` to read them back.
    """
    return run_in(cfg, run_dir(cfg, root), progress=progress)


def run_in(cfg: RunConfig, folder: str | Path, *, progress: bool = False) -> Path:
    """:func:`run` into an explicit ``folder`` (a user's output folder, not a sweep's hash
    folder): the same steps, files and lock. A folder whose ``run_config.json`` names another
    config is refused (``ValueError``) rather than mixed with it. Returns ``folder``."""
    from .._io import run_lock

    folder = Path(folder)
    with run_lock(folder):  # one process per run; a second gets RunFolderBusy
        written = folder / "run_config.json"
        if written.is_file() and json.loads(written.read_text()).get("hash") != cfg.hash():
            raise ValueError(f"{folder} holds the run of another config (see {written}); "
                             f"choose another folder or delete that one")
        _run_in(cfg, folder, progress)
    return folder


def _run_in(cfg: RunConfig, folder: Path, progress: bool) -> None:
    import torch

    from ..data import load_dataset
    from ..pooling import _shuffle_seed, shuffle_channels
    from ..probes import select_probes
    from ..sensitivity import SensitivityResult, measure
    from ..tracking import SensitivityTracker, TrackConfig
    from ..train import _resolve_device, load_checkpoint, train

    if (folder / "done").is_file():
        return
    h = cfg.hash()
    write_json(folder / "run_config.json",
               {"config": cfg.to_dict(), "hash": h, "provenance": provenance()})
    attempts_file = folder / "attempts.json"
    attempts = json.loads(attempts_file.read_text())["attempts"] if attempts_file.exists() \
        else 0
    write_json(attempts_file, {"attempts": attempts + 1})

    data = load_dataset(cfg.train.data)
    tracker = SensitivityTracker(TrackConfig(**cfg.track)) if cfg.track is not None else None
    result = train(cfg.train, folder / "train", resume=True, progress=progress, dataset=data,
                   tracker=tracker)
    final = result.final or {}
    x = select_probes(data, cfg.n_probes, split=cfg.probe_split, order=cfg.probe_order)
    n_probes = len(x) if cfg.n_probes is None else cfg.n_probes
    device = _resolve_device(cfg.train.device)
    tables = []
    for stage in cfg.stages:
        model = info = ckpt = None
        for k in range(-1, cfg.shuffled):
            name = stage if k < 0 else f"{stage}_shuffled{k}"
            tables.append(name)
            path = folder / f"sensitivity_{name}.csv"
            if path.is_file() and path.with_name(f"sensitivity_{name}.meta.json").is_file() \
                    and SensitivityResult.load(path).config.get("run") == h:
                continue  # a finished table of this run (it reads): keep it
            if model is None:
                ckpt = folder / "train" / "checkpoints" / _CHECKPOINT[stage]
                model, _, info = load_checkpoint(ckpt, map_location=device)
            net = model if k < 0 else shuffle_channels(
                model, generator=torch.Generator().manual_seed(_shuffle_seed(cfg.seed, k)))
            res = measure(
                net, x, layers=cfg.layers, perturbation=cfg.perturbation,
                n_probes=n_probes, seed=cfg.seed, channels=cfg.channels, device=device,
                probe_noise=cfg.probe_noise_value, progress=progress, **cfg.measure_kwargs,
                meta={"run": h, "stage": stage, "copy": k, "epoch": info.get("epoch"),
                      "checkpoint": str(ckpt.relative_to(folder)),
                      "test_error": (info.get("metrics") or {}).get("test_error"),
                      "probe_split": cfg.probe_split, "probe_order": cfg.probe_order,
                      **({"views": cfg.views} if cfg.views is not None else {})},
            )
            if cfg.views is not None:
                res = SensitivityResult(res.table[res.table.view.isin(cfg.views)]
                                        .reset_index(drop=True), res.config, res.provenance)
            res.save(path)
    write_json(folder / "done", {
        "hash": h, "stages": list(cfg.stages), "tables": tables,
        "epochs_run": len(result.history),
        "test_error": final.get("test_error"), "train_error": final.get("train_error"),
        "best_epoch": result.best_epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    (folder / "error.txt").unlink(missing_ok=True)


def load_run(folder: str | Path) -> dict[str, Any]:
    """A finished run: ``{"config": RunConfig, "done": dict, "tables": {name:
    SensitivityResult}}``, names ``<stage>`` and ``<stage>_shuffled<k>``; each table's
    ``config`` holds its ``stage`` and ``copy`` (-1: the net itself, k: shuffled copy k). Raises ``FileNotFoundError`` when ``folder`` holds no ``done``."""
    from ..sensitivity import SensitivityResult

    folder = Path(folder)
    if not (folder / "done").is_file():
        raise FileNotFoundError(f"{folder} holds no finished run (no 'done' marker); run the "
                                f"sweep again to finish it")
    cfg = RunConfig.from_dict(json.loads((folder / "run_config.json").read_text())["config"])
    done = json.loads((folder / "done").read_text())
    names = done.get("tables", done["stages"])
    tables = {n: SensitivityResult.load(folder / f"sensitivity_{n}.csv") for n in names}
    return {"config": cfg, "done": done, "tables": tables}
