"""Sensitivity tracking: D, G and R of every layer, epoch by epoch, while a network trains.

A :class:`SensitivityTracker` handed to :func:`diffeosense.train.fit` (or ``train``) measures,
at the epochs of its schedule, D, G and R of the chosen layers with the existing engine,
:func:`diffeosense.sensitivity.measure`, on a *fixed* probe set with *fixed* diffeos and noise:
the base seed is the same at every epoch, so probe ``i`` meets the same diffeo and the same
noise direction every time, and differences between epochs are the network's, not the
sampling's.

Schedules (:func:`parse_schedule`):

* ``"0,1,2,4"`` (or a list of ints): exactly these epochs (0 is the initialization);
* ``"every:K"``: epochs 0, K, 2K, ... and the last one;
* ``"log"``: epochs 0, 1, 2, 4, 8, ... and the last one.

"The last one" is the epoch training stops at (``epochs``, or earlier with
``stop_at_zero_loss``).

Invisible to training. ``measure`` runs the model in eval mode under ``no_grad``, restores every
submodule's mode and draws its randomness from its own per-probe generators; the tracker also
wraps it in ``torch.random.fork_rng``. Training draws every epoch's randomness from generators
seeded by ``(seed, epoch)``, so a tracked run ends with bit-identical weights (BatchNorm
running statistics included) and the same history as an untracked one.

The table: one tidy row per (epoch, layer, view), columns :data:`TRACK_COLUMNS`: ``D, G, R``
and their standard errors from ``measure``; ``train_loss, train_error`` of the epoch (running
means over its batches, as in ``metrics.jsonl``; NaN at epoch 0) and ``test_loss,
test_error`` (at epoch 0 the initial net evaluated with the test noise of generator
``(seed, 0, "test")``). With a run folder it is rewritten whole and atomically after every
tracked epoch to ``track.csv`` (or ``track.parquet``) beside ``track.meta.json`` (the
:class:`TrackConfig`, the probes used, the training config hash, provenance, and the table's
row count, columns and SHA-256: :func:`diffeosense._io.write_table`, whose reader refuses a
truncated or edited table).

Resumption. An epoch's rows are written after the epoch's checkpoint (``last.pt``, the commit
point of :mod:`diffeosense.train`). On resume the tracker reloads the table, drops any row past
the committed epoch, and measures the committed epoch if it is scheduled and missing (a kill
between the checkpoint and the table). The table and its sidecar are written in two phases
(``write_table(..., two_phase=True)``), so a kill between the two files leaves a table the
sidecar vouches for. The table of a killed and resumed run therefore equals an uninterrupted
run's: no duplicates, no gaps.

>>> import torch
>>> from diffeosense.train import TrainConfig, fit
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(64, 1, 16, 16, generator=g); y = (x.mean((1, 2, 3)) > 0).long()
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
>>> tracker = SensitivityTracker(TrackConfig("every:2", n_probes=16, layers=["output"]))
>>> _ = fit(net, (x, y), (x, y), TrainConfig(epochs=3, batch_size=16, lr=0.05),
...         progress=False, tracker=tracker)
>>> tracker.table[["epoch", "layer", "view"]].values.tolist()
[[0, 'output', 'full'], [2, 'output', 'full'], [3, 'output', 'full']]
"""

from __future__ import annotations

import copy
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _io

__all__ = [
    "TRACK_COLUMNS",
    "DEFAULT_TRACK_PROBES",
    "TRACK_FORMAT",
    "Schedule",
    "TrackConfig",
    "SensitivityTracker",
    "parse_schedule",
    "load_track",
    "tensorboard_writer",
]

TRACK_FORMAT = "diffeosense.track/2"
# Sidecars of tracking tables written before they carried a table record (row count, SHA-256).
_LEGACY_FORMAT = "diffeosense.track/1"
TRACK_COLUMNS = ["epoch", "layer", "depth", "kind", "view", "D", "G", "R", "D_se", "G_se", "R_se",
                 "n_probes", "train_loss", "train_error", "test_loss", "test_error"]
# Measured (benchmarks/bench_tracking.py, one thread): with 100 probes one tracked epoch of the
# demo costs ~9 % of a training epoch (200 probes ~17 %, the paper's 500 ~46 %), inside the 20 %
# goal when every epoch is tracked; for ResNet-18 on CIFAR-10 it is ~0.3 %.
DEFAULT_TRACK_PROBES = 100
_INSTALL_TB = "pip install 'diffeosense[tensorboard]'"


# ------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Schedule:
    """When to measure: an explicit set of epochs, every ``k`` epochs, or log-spaced.

    ``kind`` is ``"list"`` (``epochs``), ``"every"`` (``k``) or ``"log"``. Use
    :func:`parse_schedule` to build one; ``str(schedule)`` gives back the canonical spec.
    """

    kind: str
    epochs: tuple[int, ...] = ()
    k: int = 0

    def __str__(self) -> str:
        if self.kind == "list":
            return ",".join(map(str, self.epochs))
        return f"every:{self.k}" if self.kind == "every" else "log"

    def epochs_for(self, total: int) -> list[int]:
        """The scheduled epochs of a run of ``total`` epochs, sorted (the last epoch is
        included for ``every`` and ``log``).

        >>> parse_schedule("log").epochs_for(10), parse_schedule("every:4").epochs_for(10)
        ([0, 1, 2, 4, 8, 10], [0, 4, 8, 10])
        """
        if self.kind == "list":
            return [e for e in self.epochs if e <= total]
        if self.kind == "every":
            out = set(range(0, total + 1, self.k))
        else:
            out = {0} | {2**i for i in range(total.bit_length()) if 2**i <= total}
        return sorted(out | {total})

    def includes(self, epoch: int, total: int, final: bool = False) -> bool:
        """Whether ``epoch`` is measured; ``final``: training stops after this epoch (then
        ``every`` and ``log`` schedules measure it even when it is not on their grid)."""
        if self.kind == "list":
            return epoch in self.epochs
        return final or epoch in self.epochs_for(total)


def parse_schedule(spec: str | Sequence[int] | Schedule) -> Schedule:
    """Parse ``"0,1,2,4"`` / a list of epochs, ``"every:K"`` or ``"log"``.

    >>> parse_schedule("4, 0,2"), parse_schedule("every:5"), str(parse_schedule([3, 1]))
    (Schedule(kind='list', epochs=(0, 2, 4), k=0), Schedule(kind='every', epochs=(), k=5), '1,3')
    """
    if isinstance(spec, Schedule):
        return spec
    hint = "use a list of epochs such as '0,1,2,4', 'every:K' (K >= 1) or 'log'"
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "log":
            return Schedule("log")
        m = re.fullmatch(r"every:\s*(\d+)", s)
        if m:
            k = int(m.group(1))
            if k < 1:
                raise ValueError(f"schedule {spec!r}: K must be >= 1; {hint}")
            return Schedule("every", k=k)
        if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*,?\s*", s):
            raise ValueError(f"unknown tracking schedule {spec!r}; {hint}")
        items = [int(t) for t in s.split(",") if t.strip()]
    else:
        try:
            items = [int(e) for e in spec]
        except (TypeError, ValueError):
            raise ValueError(f"unknown tracking schedule {spec!r}; {hint}") from None
        if any(e < 0 for e in items):
            raise ValueError(f"schedule {spec!r}: epochs must be >= 0; {hint}")
    if not items:
        raise ValueError(f"empty tracking schedule; {hint}")
    return Schedule("list", epochs=tuple(sorted(set(items))))


# ------------------------------------------------------------------ config
@dataclass
class TrackConfig:
    """What is tracked (saved in ``track.meta.json``; a resumed table must keep it).

    Attributes:
        schedule: ``"0,1,2,4"``, ``"every:K"`` or ``"log"`` (see :func:`parse_schedule`);
            stored in canonical form.
        n_probes: probe images (the first ``n_probes`` of the split); the default is small
            enough that tracking every epoch of the demo costs under 20 % of training.
        layers: ``"all"``, a kind preset (``"conv+activation"``) or a list of layer names.
        perturbation: perturbation spec, as for ``measure`` (default: the paper's diffeos).
        seed: base seed of the diffeos and noise (the same at every epoch).
        batch_size: probes per forward pass (does not change the result).
        split: ``"test"``, ``"train"`` or ``"auto"`` (test when the dataset has one). Where the
            dataset adds noise to that split, the probes are corrupted once, with a generator
            seeded from ``seed``, and kept (nets trained with noise are measured on noisy
            probes, as in the paper).
        channels: also the channel-averaged representation (rows with ``view ==
            "channel-mean"``).
        format: ``"csv"`` or ``"parquet"`` (``track.csv`` / ``track.parquet``).
    """

    schedule: Any = "log"
    n_probes: int = DEFAULT_TRACK_PROBES
    layers: Any = "all"
    perturbation: str = "diffeo"
    seed: int = 0
    batch_size: int = 128
    split: str = "auto"
    channels: bool = False
    format: str = "csv"

    def __post_init__(self) -> None:
        from ._validate import check_types

        check_types(self)
        self.schedule = str(parse_schedule(self.schedule))
        if self.n_probes < 2:
            raise ValueError(f"n_probes must be >= 2 (the denominator compares probes), got "
                             f"{self.n_probes}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.split not in ("auto", "test", "train"):
            raise ValueError(f"split must be 'auto', 'test' or 'train', got {self.split!r}")
        if self.format not in ("csv", "parquet"):
            raise ValueError(f"format must be 'csv' or 'parquet', got {self.format!r}")
        if not isinstance(self.perturbation, str):
            raise ValueError("perturbation must be a spec string (e.g. 'diffeo:cut=3') so the "
                             "tracking config can be saved and compared on resume")
        if not isinstance(self.layers, str):
            if callable(self.layers) or not all(isinstance(n, str) for n in self.layers):
                raise ValueError("layers must be 'all', a kind preset or a list of layer "
                                 "names (a predicate cannot be saved with the table)")
            self.layers = list(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return _io.to_jsonable(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrackConfig:
        return _io.dataclass_from_dict(cls, d)


# ------------------------------------------------------------------ tensorboard
def tensorboard_writer(log_dir: str | Path):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``; ImportError naming the
    install command when the ``tensorboard`` extra is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(f"TensorBoard logging needs the tensorboard package ({e}); install "
                          f"it with: {_INSTALL_TB}") from None
    return SummaryWriter(log_dir=str(log_dir))


# ------------------------------------------------------------------ tracker
class SensitivityTracker:
    """Measures D, G, R of chosen layers at scheduled epochs of a :func:`~diffeosense.train.fit`.

    Args:
        config: a :class:`TrackConfig` (default ``TrackConfig()``: log schedule, all layers).
        tensorboard: a folder: also log the full view's D, G, R of every tracked layer and the
            epoch's errors as TensorBoard scalars (tags ``D/<layer>``, ``G/<layer>``,
            ``R/<layer>``, ``error/train``, ``error/test``; step = epoch). Needs
            ``pip install 'diffeosense[tensorboard]'``.
        path: where the table goes (default ``<run folder>/track.<format>``; nothing is
            written for an in-memory run without ``path``).

    ``fit`` calls :meth:`begin` once (after the initial or resumed checkpoint) and
    :meth:`after_epoch` after every epoch's checkpoint. :attr:`table` holds the rows so far.
    """

    def __init__(self, config: TrackConfig | None = None, *,
                 tensorboard: str | Path | None = None, path: str | Path | None = None):
        self.config = config or TrackConfig()
        self.schedule = parse_schedule(self.config.schedule)
        self.path = Path(path) if path is not None else None
        self._writer = tensorboard_writer(tensorboard) if tensorboard is not None else None
        self._rows: list[dict[str, Any]] = []
        self.probes: torch.Tensor | None = None
        self._meta: dict[str, Any] = {}

    # -- public state ----------------------------------------------------------------------
    @property
    def table(self):
        """The tracked rows so far as a ``pandas.DataFrame`` (columns :data:`TRACK_COLUMNS`)."""
        import pandas as pd

        return pd.DataFrame(self._rows, columns=TRACK_COLUMNS)

    @property
    def tracked_epochs(self) -> list[int]:
        return sorted({int(r["epoch"]) for r in self._rows})

    # -- the hook --------------------------------------------------------------------------
    def begin(self, model: nn.Module, data, cfg, out_dir: str | Path | None,
              history: list[dict[str, Any]]) -> None:
        """Bind to a run: fix the probes, reload the table of a resumed run, and measure the
        committed epoch (0 for a fresh run) if it is scheduled and missing.

        Args:
            model: the model, holding the committed epoch's weights.
            data: the run's :class:`~diffeosense.data.ImageDataset` (on the run's device).
            cfg: the run's :class:`~diffeosense.train.TrainConfig`.
            out_dir: the run folder (None: in memory).
            history: the per-epoch metrics committed so far (empty for a fresh run).
        """
        from .data.datasets import gaussian_corruption
        from .provenance import config_hash, provenance
        from .train import _derive_seed

        c = self.config
        self._cfg, self._data = cfg, data
        self._out_dir = Path(out_dir) if out_dir is not None else None
        split, probes = self._probes_of(data, cfg)
        noise = data.noise_for(split)
        if noise > 0:
            g = torch.Generator().manual_seed(_derive_seed(c.seed, "track-probe-noise"))
            probes = gaussian_corruption(probes, noise, g)
        self.probes = probes
        self._meta = {
            "format": TRACK_FORMAT,
            "config": c.to_dict(),
            "probes": {"split": split, "n": len(probes), "first": 0, "noise": noise},
            "train_config_hash": config_hash(cfg.to_dict()),
            "provenance": json.loads(json.dumps(_io.to_jsonable(provenance()), default=str)),
        }
        if self._out_dir is not None and self.path is None:
            self.path = self._out_dir / f"track.{c.format}"

        committed = int(history[-1]["epoch"]) if history else 0
        self._rows = []
        stale_sidecar = False
        if self.path is not None and self.path.exists():
            df, meta = load_track(self.path)
            # A kill between the table and its final sidecar (or an old run's sidecar without
            # a table record): the table is sound, its sidecar gets rewritten below.
            stale_sidecar = "pending_table" in meta or meta.get("format") != TRACK_FORMAT
            if meta.get("config") != c.to_dict():
                raise ValueError(
                    f"cannot continue the tracking table {self.path}: it was made with "
                    f"{meta.get('config')}, now {c.to_dict()}; use the same --track-* options "
                    f"or another output folder")
            # Rows past the committed epoch belong to a future the resumed run recomputes.
            self._rows = [r for r in df.to_dict("records") if int(r["epoch"]) <= committed]
            for r in self._rows:
                r["epoch"], r["depth"], r["n_probes"] = (int(r["epoch"]), int(r["depth"]),
                                                         int(r["n_probes"]))
        by_epoch = {int(m["epoch"]): m for m in history}
        final = committed == cfg.epochs or bool(
            cfg.stop_at_zero_loss and history and history[-1].get("train_eval_loss") == 0.0)
        done = set(self.tracked_epochs)
        wanted = [e for e in self.schedule.epochs_for(cfg.epochs) if e < committed]
        if self.schedule.includes(committed, cfg.epochs, final):
            wanted.append(committed)
        missing = [e for e in wanted if e not in done]
        changed = False
        for e in missing:
            if e == committed:
                net = model
            else:  # an epoch tracked by no one so far: its kept checkpoint, if any
                net = self._checkpoint_model(model, e)
                if net is None:
                    warnings.warn(f"tracking: epoch {e} is scheduled but was not tracked and "
                                  f"its checkpoint was not kept; it stays missing", stacklevel=3)
                    continue
            self._track(net, e, by_epoch.get(e, {}))
            changed = True
        if changed or stale_sidecar or (self.path is not None and not self.path.exists()):
            self._write()

    def _probes_of(self, data, cfg) -> tuple[str, torch.Tensor]:
        """The split and the (clean) probes of a run; ValueError for a schedule past the
        run's epochs or a split of fewer than 2 images."""
        c = self.config
        if self.schedule.kind == "list" and max(self.schedule.epochs) > cfg.epochs:
            raise ValueError(f"tracking schedule {c.schedule!r} asks for epoch "
                             f"{max(self.schedule.epochs)} but the run has {cfg.epochs} epochs")
        split = c.split if c.split != "auto" else ("test" if data.x_test is not None else "train")
        x, _ = data.split(split)
        probes = x[: c.n_probes]
        if len(probes) < 2:
            raise ValueError(f"the {split} split holds {len(probes)} image(s); tracking needs "
                             f"at least 2 probes")
        return split, probes

    def check(self, model: nn.Module, data, cfg) -> None:
        """Refuse, before the run folder is touched, what :meth:`begin` would refuse only
        after the initial checkpoint was written: a schedule past the run's epochs, too few
        probes, unknown layers or a bad perturbation spec (one measurement of two probes in
        eval mode: the weights, the modes and every random stream are left as they were).
        ``fit`` calls it first."""
        from .sensitivity import measure

        c = self.config
        _, probes = self._probes_of(data, cfg)
        dev = next((p.device for p in model.parameters()), probes.device)
        cuda = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            measure(model, probes[:2].to(dev), layers=c.layers, perturbation=c.perturbation,
                    n_probes=2, batch_size=2, seed=c.seed, channels=c.channels, progress=False)

    def after_epoch(self, epoch: int, model: nn.Module, metrics: dict[str, Any], *,
                    final: bool = False) -> None:
        """Measure after epoch ``epoch`` (its checkpoint committed) if it is scheduled;
        ``final``: training stops after this epoch."""
        if epoch in self.tracked_epochs or not self.schedule.includes(epoch, self._cfg.epochs,
                                                                      final):
            return
        self._track(model, epoch, metrics)
        self._write()

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self._writer is not None:
            self._writer.close()

    # -- internals -------------------------------------------------------------------------
    def measure(self, model: nn.Module):
        """D, G, R of ``model`` on the tracker's probes, diffeos and noise (those of every
        tracked epoch): a :class:`~diffeosense.sensitivity.SensitivityResult`."""
        from .sensitivity import _model_device, measure

        if self.probes is None:
            raise ValueError("the tracker has no probes yet: it is bound to a run by fit()")
        c = self.config
        dev = _model_device(model)
        cuda = [dev.index or 0] if dev.type == "cuda" else []
        # measure draws from its own generators; fork_rng makes sure nothing leaks anyway.
        with torch.random.fork_rng(devices=cuda):
            return measure(model, self.probes, layers=c.layers, perturbation=c.perturbation,
                           n_probes=c.n_probes, batch_size=c.batch_size, seed=c.seed,
                           channels=c.channels, progress=False)

    def _track(self, model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None:
        res = self.measure(model)
        m = dict(metrics)
        if epoch == 0 and self._data.x_test is not None and "test_error" not in m:
            m.update(self._initial_test(model))
        df = res.table
        views = ["full", "channel-mean"] if self.config.channels else ["full"]
        df = df[df.view.isin(views)]
        rows = []
        for r in df.to_dict("records"):
            row = {k: r[k] for k in ("layer", "depth", "kind", "view", "D", "G", "R",
                                     "D_se", "G_se", "R_se", "n_probes")}
            row["epoch"] = int(epoch)
            for k in ("train_loss", "train_error", "test_loss", "test_error"):
                row[k] = float(m[k]) if m.get(k) is not None else math.nan
            rows.append(row)
        self._rows = sorted(self._rows + rows, key=lambda r: r["epoch"])
        self._log(epoch, rows)

    def _initial_test(self, model: nn.Module) -> dict[str, float]:
        from .train import _derive_seed, evaluate

        cfg = self._cfg
        g = torch.Generator().manual_seed(_derive_seed(cfg.seed, 0, "test"))
        modes = {mod: mod.training for mod in model.modules()}
        dev = next((t.device for t in model.parameters()), torch.device("cpu"))
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            ev = evaluate(model, self._data, "test", cfg.loss, cfg.eval_batch_size, g)
        for mod, mode in modes.items():
            mod.training = mode
        return {"test_loss": ev["loss"], "test_error": ev["error"]}

    def _checkpoint_model(self, model: nn.Module, epoch: int) -> nn.Module | None:
        from .train import load_checkpoint

        if self._out_dir is None:
            return None
        ck = self._out_dir / "checkpoints"
        path = ck / ("init.pt" if epoch == 0 else f"epoch_{epoch:04d}.pt")
        if not path.exists():
            return None
        net = copy.deepcopy(model)
        load_checkpoint(path, net, map_location=_device_of(model))
        return net

    def _log(self, epoch: int, rows: list[dict[str, Any]]) -> None:
        if self._writer is None:
            return
        for r in rows:
            if r["view"] != "full":
                continue
            for q in ("D", "G", "R"):
                if math.isfinite(r[q]):
                    self._writer.add_scalar(f"{q}/{r['layer']}", r[q], epoch)
        if rows:
            for split in ("train", "test"):
                v = rows[0][f"{split}_error"]
                if math.isfinite(v):
                    self._writer.add_scalar(f"error/{split}", v, epoch)
        self._writer.flush()

    def _write(self) -> None:
        if self.path is None:
            return
        _io.write_table(self.path, self.table, self._meta, two_phase=True)


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def load_track(path: str | Path):
    """Read a tracking table (``track.csv`` / ``track.parquet``) and its ``track.meta.json``.

    Returns ``(table, meta)``: a ``pandas.DataFrame`` with :data:`TRACK_COLUMNS` (floats read
    back exactly) and the sidecar dict. The table is checked against the sidecar's record
    (:func:`diffeosense._io.read_table`): a truncated, edited or replaced table, or one without
    its sidecar, is refused with an error naming it. A table written before sidecars carried
    that record (format ``diffeosense.track/1``) is read with a warning: it cannot be checked,
    but it may hold a long training run worth keeping.

    >>> import tempfile, torch
    >>> from diffeosense.train import TrainConfig, fit
    >>> x = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> y = (x.mean((1, 2, 3)) > 0).long()
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    >>> tracker = SensitivityTracker(TrackConfig("0,1", n_probes=8, layers=["output"]))
    >>> run = tempfile.mkdtemp()
    >>> _ = fit(net, (x, y), (x, y), TrainConfig(epochs=1, batch_size=16), run, progress=False,
    ...         tracker=tracker)
    >>> table, meta = load_track(f"{run}/track.csv")
    >>> table.epoch.tolist(), meta["config"]["schedule"], meta["probes"]["n"]
    ([0, 1], '0,1', 8)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tracking table {path}")
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"unknown tracking table format {path.suffix!r}: use .csv or .parquet")
    legacy = _legacy_meta(path)
    if legacy is not None:
        warnings.warn(f"{path} was written before tracking tables carried their row count and "
                      f"hash in {_io.sidecar_path(path).name}: it is read unchecked; re-run "
                      f"(or resume) the training to write a checked table", stacklevel=2)
        df, meta = _read_unchecked(path), legacy
    else:
        df, meta = _io.read_table(path, what="diffeosense tracking table")
    missing = [c for c in TRACK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not a diffeosense tracking table (missing columns "
                         f"{missing})")
    df["layer"] = df["layer"].astype(str)
    return df[TRACK_COLUMNS], meta


def _legacy_meta(path: Path) -> dict[str, Any] | None:
    """The sidecar of a tracking table from before table records, else None."""
    side = _io.sidecar_path(path)
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None  # missing or damaged: read_table says so
    if isinstance(meta, dict) and meta.get("format") == _LEGACY_FORMAT and "table" not in meta:
        return meta
    return None


def _read_unchecked(path: Path):
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(path, **exact)
