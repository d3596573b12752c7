r"""The 1D scale-detection experiment: trained nets against the theory of spatial pooling.

Tomasini et al. 2022 (Fig. 7; science.md §4-§5): 1D CNNs with filter size F, with and without
stride (s = 1 and s = F), are trained with the hinge loss and plain SGD on the scale-detection
task until the training loss is zero. At initialization and after training, the sensitivities
of every layer to the task's diffeomorphism (each active pixel moves by one site, moves that
would change the label undone: :class:`~diffeosense.data.scale_detection.ActivePixelMove`) and
to norm-matched white noise are measured,

    D_k = E ||f_k(tau x) - f_k(x)||^2 / E ||f_k(x1) - f_k(x2)||^2,
    G_k = E ||f_k(x + eta) - f_k(x)||^2 / E ||f_k(x1) - f_k(x2)||^2,   R_k = D_k / G_k,

and set beside the idealized pure-pooling net of :mod:`diffeosense.theory` (same N, F, s).
Expected (science.md §5): after training, not at initialization, D_k falls and G_k rises with
the depth k, as ``k^-1, k^(1/2), k^(-3/2)`` without stride and ``F^-k, F^k, F^(-2k)`` with
``s = F``.

Choices (all fields of :class:`ScaleDetectionExperiment`, saved beside the results):

* Layers: ``f_k`` is the output of the k-th activation (``features.act{k}``); every tapped
  layer (convolutions, pooling, readout, output) is measured and kept in the tables, but the
  exponents are fitted on the activations ``fit_k_min <= k <= fit_k_max`` only. Default
  ``fit_k_min = 2``: the first layer has not pooled yet (its filter sees F sites), and the
  theory's laws are statements about the pooling layers. The choice is made before looking at
  the data and is the same for both strides and for init and trained nets.
* Views: the full representation (channels x sites, flattened) and the channel-mean view
  (the mean over channels at each site, the authors' measurement; science.md §1b, §3), both
  in every table (column ``view``) and fitted separately.
* Probes: ``n_probes`` pairs of the test split drawn balanced across the two classes
  (alternating +1, -1 in the split's seeded order; all of it by default), the same probes,
  diffeos and noise at initialization and after training (paired comparison).
* Noise: ``noise_match="sample"`` (``||eta|| = ||tau x - x||`` exactly for each probe; a probe
  whose move was undone gets no noise); the theory uses i.i.d. noise of the batch-matched
  variance, which differs by O(1/N) (docs/theory.md). Denominator over all ordered pairs
  including ``i = j`` (``"pairs-incl-diag"``), as the authors and the theory.
* Regime (options of :class:`~diffeosense.models.cnn1d.CNN1d`): ``parametrization``,
  ``readout``, ``init``. The presets ``small`` and ``paper`` are the authors' setting
  (science.md §1b): NTK-form convolutions (``w, b ~ N(0, 1)``), a mean-field readout
  ``(beta . y) / H``, and a learning rate scaled with the width, ``lr_effective = lr * H``
  (``lr_scaling="width"``; the resolved value is written in ``config.json``). The mean-field
  output starts at O(1/sqrt(H)) and reaches the hinge margins only by moving the features:
  the feature-learning regime. The ``lazy`` preset is the earlier setting (standard
  parametrization, He init, standard readout, lr 0.01 unscaled, amplitude N/2): its outputs
  start large, the margins are reached after small weight changes and the sensitivities stay
  close to their initial values. Pooling is learnt only when the weights move.
* Training: hinge loss, plain SGD (momentum 0, no weight decay, constant lr), stopped at the
  first epoch whose full-pass training loss is exactly 0, or at the epoch budget; the final
  weights are measured.
* Amplitude: the small and paper presets use ``sqrt(N / 2)`` (the authors'); ``lazy`` the
  task's default ``N / 2``.
* Seeds: network seed ``s`` seeds the initialization (a generator seeded from ``s``, passed
  to the model as ``init_seed``), the batch order and the measurement's diffeos and noise;
  the data split (``data_seed``) is the same for every seed.
* Theory: :func:`~diffeosense.theory.pooling_sensitivities` with the same N, F, s (exact;
  i.i.d. Gaussian noise rectified by the first ReLU), for the depths where the idealized net
  is defined (with stride, ``N / F^k >= 2``). ``theory_fit`` in the exponent table is the fit
  of that exact curve over the same window, ``predicted`` the asymptotic law.

Each (stride, seed) unit is a :class:`~diffeosense.experiments.run.RunConfig`
(:func:`run_configs`: train, then measure ``init.pt`` and the final ``last.pt`` on the balanced
probes with the task's move, keeping the ``full`` and ``channel-mean`` views), run by the sweep
engine (:func:`~diffeosense.experiments.sweep.run_sweep`): units execute in parallel on a local
process pool, Ray or SLURM (``backend``, ``workers``), a killed unit resumes from its
checkpoints, and finished units are not re-run.

Run folder (``out_dir / "scale-detection-<hash>"``, the hash of the config without ``seeds``,
so a re-run with more seeds re-uses the finished ones)::

    config.json                  the experiment config, its hash, provenance
    runs/<run hash>/             one (stride, seed) unit (a sweep run folder, ``run.run``):
        train/                   the training run (diffeosense.train.train, on the dataset
                                 spec ``dataset_name()``: ordinary checkpoints)
        sensitivity_init.csv, sensitivity_trained.csv   tables (+ .meta.json)
        done                     written last: the unit is finished
    runs/sweep.json              the units' outcomes
    sensitivity.csv              every unit, tidy (stride, seed, state, view, layer, k, D, G, R,
                                 *_se)
    aggregate.csv                geometric means over the seeds (sensitivity.aggregate;
                                 one seed: its own table and per-probe standard errors)
    theory.csv                   the idealized net (stride, k, D, G, R)
    exponents.csv                fitted vs predicted exponents
    summary.json                 training outcome of every unit (its ``run`` hash among them),
                                 exponents, provenance

A folder written before the units were sweep runs holds ``units/s{s}-seed{seed}/`` (``train/``,
``init.csv``, ``trained.csv``, ``unit.json``): :func:`run` moves each unit's ``train/`` into
its run folder (the training is not repeated), measures it there (the same tables) and removes
the rest of the old unit folder; an old unit trained with another config is refused, by name.

>>> cfg = preset("small")
>>> cfg.size, cfg.task, cfg.filter_size, cfg.strides, cfg.depths, cfg.lr_effective
(128, 'block', 2, (2,), (7,), 1.28)
>>> preset("paper").width, len(preset("paper").seeds)
(1000, 10)
>>> preset("lazy").parametrization, preset("lazy").lr_effective
('standard', 0.01)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from .._validate import check_types
from ..provenance import config_hash, provenance

__all__ = [
    "PRESETS",
    "run_configs",
    "unit_folder",
    "ScaleDetectionExperiment",
    "ScaleDetectionResult",
    "preset",
    "run",
    "load_result",
    "fit_exponents",
    "theory_table",
    "format_exponents",
]

_INITS = ("kaiming", "torch", "normal")
_LR_SCALINGS = ("width", "none")
_VIEWS = ("full", "channel-mean")
_ACT = re.compile(r"(?:^|\.)(?:act|conv)(\d+)$")


@dataclass(frozen=True)
class ScaleDetectionExperiment:
    """Everything the scale-detection experiment depends on (saved as ``config.json``).

    Data (:class:`~diffeosense.data.scale_detection.ScaleDetectionConfig`, 1D):
        size: N; xi, gap, task: the label rule; amplitude: active-pixel value (None: N/2);
        train_size: P; test_size: test pairs (None: all the balanced rest); data_seed.
    Nets (:func:`~diffeosense.models.cnn1d.cnn1d`, circular padding, GAP, scalar readout):
        filter_size: F; strides: the strides compared (each 1 or F); depths: the depth L of
        the net of each stride (same length as ``strides``; None: ``log_F N`` layers for
        s = F, and the same for s = 1); width: H; activation; bias; parametrization
        (``"ntk"`` or ``"standard"``); readout (``"mean-field"`` or ``"standard"``); init:
        ``"normal"`` (NTK: every weight and bias ``N(0, 1)``), ``"kaiming"`` (standard: He
        normal convolutions ``N(0, 2 / (C_in F))``, LeCun normal readout, zero biases) or
        ``"torch"`` (the PyTorch default, whose variance shrinks by ~3 per layer: deep
        unstrided nets then start with a vanishing output). None: ``"normal"`` for NTK.
    Training (:class:`~diffeosense.train.TrainConfig`, hinge loss, plain SGD):
        lr (base), lr_scaling (``"width"``: the SGD learning rate is ``lr * H``, as the
        mean-field readout needs; ``"none"``: ``lr``), batch_size, epochs (budget),
        stop_at_zero_loss, momentum, weight_decay. ``lr_effective`` is the value used.
    Measurement (:func:`~diffeosense.sensitivity.measure`):
        n_probes (None: the whole test split), measure_batch_size, noise_match, denominator.
    Fits: fit_k_min, fit_k_max (None: the last layer) on the activation layers k.
    seeds: network seeds (one unit per stride and seed).
    device: where units train and are measured ("cpu", "cuda", ...; not part of the hash).
    preset: the preset this config came from (a label; changing a field keeps it).
    """

    preset: str = "small"
    # data
    size: int = 128
    xi: float = 32
    gap: float = 0
    task: str = "block"
    amplitude: float | None = 8.0
    train_size: int = 1024
    test_size: int | None = None
    data_seed: int = 0
    # nets
    filter_size: int = 2
    strides: tuple[int, ...] = (2,)
    depths: tuple[int, ...] | None = (7,)
    width: int = 128
    activation: str = "relu"
    bias: bool = True
    parametrization: str = "ntk"
    readout: str = "mean-field"
    init: str | None = None
    # training
    lr: float = 0.01
    lr_scaling: str = "width"
    batch_size: int = 8
    epochs: int = 100
    stop_at_zero_loss: bool = True
    momentum: float = 0.0
    weight_decay: float = 0.0
    # measurement
    n_probes: int | None = None
    measure_batch_size: int = 256
    noise_match: str = "sample"
    denominator: str = "pairs-incl-diag"
    # fits
    fit_k_min: int = 2
    fit_k_max: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"

    def __post_init__(self) -> None:
        # Lists from JSON or the CLI become tuples (the config is hashable and frozen).
        for name in ("strides", "depths", "seeds"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(int(a) for a in v))
        check_types(
            self, xi={"lo": 0, "lo_open": True}, gap={"lo": 0}, amplitude={"optional": True},
            lr={"lo": 0, "lo_open": True}, momentum={"lo": 0, "hi": 1, "hi_open": True},
            weight_decay={"lo": 0},
        )  # fmt: skip
        if self.epochs < 1:
            raise ValueError(f"ScaleDetectionExperiment.epochs must be >= 1 (the experiment "
                             f"compares the nets before and after training), got {self.epochs}")
        F = self.filter_size
        if F < 2:
            raise ValueError(f"filter_size must be >= 2, got {F}")
        if not self.strides:
            raise ValueError("give at least one stride")
        bad = [s for s in self.strides if s not in (1, F)]
        if bad:
            raise ValueError(f"strides must be 1 or filter_size={F} (the paper's two nets), "
                             f"got {list(self.strides)}")
        if len(set(self.strides)) != len(self.strides):
            raise ValueError(f"strides must be distinct, got {list(self.strides)}")
        if self.depths is not None and len(self.depths) != len(self.strides):
            raise ValueError(f"depths {list(self.depths)} must give one depth per stride "
                             f"{list(self.strides)}")
        for s, L in zip(self.strides, self.net_depths, strict=True):
            if L < 1:
                raise ValueError(f"depth must be >= 1, got {L} for stride {s}")
            if s > 1 and self.size // s**L < 1:
                raise ValueError(f"stride {s} with depth {L} needs N >= {s**L} sites, got "
                                 f"size={self.size}; lower the depth")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        if self.init is not None and self.init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {self.init!r}")
        if self.lr_scaling not in _LR_SCALINGS:
            raise ValueError(f"lr_scaling must be one of {_LR_SCALINGS}, got "
                             f"{self.lr_scaling!r}")
        from ..models.cnn1d import CNN1d

        CNN1d(1, 1, depth=1, width=1, filter_size=F, parametrization=self.parametrization,
              readout=self.readout, init=self.init, activation=self.activation)  # validates
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {self.activation!r}")
        if not self.lr > 0 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("need lr > 0, batch_size >= 1 and epochs >= 0")
        if self.n_probes is not None and self.n_probes < 2:
            raise ValueError(f"n_probes must be >= 2 (or None for the whole test split), "
                             f"got {self.n_probes}")
        if self.fit_k_min < 1 or (self.fit_k_max is not None and self.fit_k_max < self.fit_k_min):
            raise ValueError(f"need 1 <= fit_k_min <= fit_k_max, got {self.fit_k_min}, "
                             f"{self.fit_k_max}")
        self.data_config()  # validates the task

    @property
    def net_depths(self) -> tuple[int, ...]:
        """Depth of the net of each stride (``depths``, or ``floor(log_F N)``)."""
        if self.depths is not None:
            return tuple(self.depths)
        L = max(1, int(math.floor(math.log(self.size) / math.log(self.filter_size) + 1e-9)))
        return tuple(L for _ in self.strides)

    def data_config(self):
        from ..data.scale_detection import ScaleDetectionConfig

        return ScaleDetectionConfig(
            dim=1, size=self.size, xi=self.xi, gap=self.gap, task=self.task,
            amplitude=self.amplitude, train_size=self.train_size, test_size=self.test_size,
            seed=self.data_seed,
        )

    @property
    def lr_effective(self) -> float:
        """The SGD learning rate: ``lr * width`` (``lr_scaling="width"``) or ``lr``."""
        return self.lr * (self.width if self.lr_scaling == "width" else 1)

    def model_kwargs(self, stride: int, seed: int = 0) -> dict[str, Any]:
        depth = self.net_depths[self.strides.index(stride)]
        return {"depth": depth, "width": self.width, "filter_size": self.filter_size,
                "stride": stride, "activation": self.activation, "padding": "circular",
                "bias": self.bias, "parametrization": self.parametrization,
                "readout": self.readout, "init": self.init,
                "init_seed": _mix(seed, 0x5CA1E)}

    def dataset_name(self) -> str:
        """The ``diffeosense train --data`` spec of the task (every option written, so the
        units' checkpoints name their task: ``diffeosense pooling``/``measure`` read it)."""
        from ..data.scale_detection import task_dataset_name

        return task_dataset_name(self.data_config())

    def train_config(self, stride: int, seed: int):
        from ..data import DataConfig
        from ..train import TrainConfig

        return TrainConfig(
            model="cnn1d", model_kwargs=self.model_kwargs(stride, seed),
            data=DataConfig(name=self.dataset_name(), P=self.train_size, seed=self.data_seed,
                            download=False),
            epochs=self.epochs, batch_size=self.batch_size, optimizer="sgd",
            lr=self.lr_effective,
            momentum=self.momentum, weight_decay=self.weight_decay, schedule="constant",
            loss="hinge", seed=seed, device=self.device, keep_every=0,
            stop_at_zero_loss=self.stop_at_zero_loss,
        )

    def to_dict(self) -> dict[str, Any]:
        return _io.to_jsonable(self)

    def resolved(self) -> dict[str, Any]:
        """The config plus the values it implies (written beside the results)."""
        return {**self.to_dict(), "lr_effective": self.lr_effective,
                "net_depths": list(self.net_depths), "amplitude_value":
                self.data_config().value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScaleDetectionExperiment:
        return _io.dataclass_from_dict(cls, d)

    def folder_hash(self) -> str:
        """``config_hash`` of the config without ``seeds`` (units are keyed by their seed) and
        ``device``."""
        d = self.to_dict()
        d.pop("seeds")
        d.pop("device")
        return config_hash(d)


PRESETS: dict[str, ScaleDetectionExperiment] = {
    # The authors' 1D setting (science.md §1b): block task, N = 128, xi = 32, gap 0, pixel
    # value sqrt(N/2) = 8, F = 2, 7 layers (the strided net pools blocks of 2^7 = 128), H = 128,
    # NTK convolutions, mean-field readout, lr 0.01 * H, batch 8, P = 1024 (the rest, 2944
    # pairs, is the test split), probes a balanced tenth of all 8128 pairs (812). Stride 2
    # only: the unstrided net of the same depth (receptive field 8, invariant to circular
    # shifts) stayed at chance on these labels (train error 0.50 after 3 epochs, 13 s each).
    "small": ScaleDetectionExperiment(preset="small", n_probes=812),
    # Stride 1 in the same regime, on a task it can solve: a translation-invariant net (circular
    # padding, global pooling) cannot fit the block labels, and with F = 2 it needs a receptive
    # field > xi, so the distance task at N = 64, xi = 8, gap 2 (as ``lazy``), L = 8 layers
    # (receptive field 9), P = 512, pixel value sqrt(N/2); probes: the whole test split.
    "small-stride1": ScaleDetectionExperiment(
        preset="small-stride1", size=64, xi=8, gap=2, task="distance",
        amplitude=math.sqrt(32), train_size=512, strides=(1,), depths=(8,)),
    # The same at the paper's width and 10 seeds (a GPU machine: --device cuda).
    "paper": ScaleDetectionExperiment(preset="paper", n_probes=812, width=1000,
                                      seeds=tuple(range(10))),
    # The earlier setting, kept for the contrast (lazy regime): standard parametrization, He
    # init, standard readout, unscaled lr 0.01, amplitude N/2, distance task (N = 64, xi = 8,
    # gap 2, P = 512), batch 32. s = 1 with L = 8 (receptive field 9 > xi), s = 2 with L = 6.
    "lazy": ScaleDetectionExperiment(
        preset="lazy", size=64, xi=8, gap=2, task="distance", amplitude=None,
        train_size=512, strides=(1, 2), depths=(8, 6), width=64, parametrization="standard",
        readout="standard", init="kaiming", lr_scaling="none", batch_size=32),
}


def preset(name: str = "small", **overrides: Any) -> ScaleDetectionExperiment:
    """The config of a preset (``"small"``, ``"paper"`` or ``"lazy"``), with fields
    overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass
class ScaleDetectionResult:
    """What :func:`run` returns (tables are ``pandas.DataFrame``s, also saved as CSV).

    ``sensitivity``: one row per (stride, seed, state, layer); ``aggregate``: geometric means
    over seeds per (stride, state, layer); ``theory``: the idealized net; ``exponents``: fits.
    ``units_run`` / ``units_skipped``: (stride, seed) units computed now / found finished.
    """

    config: ScaleDetectionExperiment
    out_dir: Path
    sensitivity: Any
    aggregate: Any
    theory: Any
    exponents: Any
    units: list[dict[str, Any]] = field(default_factory=list)
    units_run: list[tuple[int, int]] = field(default_factory=list)
    units_skipped: list[tuple[int, int]] = field(default_factory=list)


# ---------------------------------------------------------------------------------- pieces


def _layer_k(name: str) -> float:
    """The block index k of ``features.act{k}`` / ``features.conv{k}``, else NaN."""
    m = _ACT.search(name)
    return float(m.group(1)) if m else math.nan


def _tidy(result, **cols):
    df = result.to_frame()
    df = df[df.view.isin(_VIEWS)].reset_index(drop=True)
    df.insert(0, "k", [_layer_k(n) for n in df.layer])
    for i, (key, val) in enumerate(cols.items()):
        df.insert(i, key, val)
    return df


def run_configs(cfg: ScaleDetectionExperiment) -> list:
    """The units: one :class:`~diffeosense.experiments.run.RunConfig` per (stride, seed), in
    that order: ``cfg.train_config(stride, seed)``, measured at every layer (``channels``,
    keeping the ``full`` and ``channel-mean`` views) at ``init`` and on the final weights
    (``trained``: ``last.pt``, not ``best.pt``), on ``n_probes`` balanced test probes (None:
    all), with the task's label-preserving pixel move, measurement seed = network seed."""
    from ..probes import task_perturbation
    from .run import RunConfig

    move = task_perturbation(cfg.dataset_name())
    return [RunConfig(train=cfg.train_config(s, seed), layers="all", stages=["init", "trained"],
                      channels=True, views=list(_VIEWS), n_probes=cfg.n_probes,
                      probe_order="balanced", perturbation=move, seed=seed,
                      measure_kwargs={"batch_size": cfg.measure_batch_size,
                                      "noise_match": cfg.noise_match,
                                      "denominator": cfg.denominator})
            for s in cfg.strides for seed in cfg.seeds]


def unit_folder(cfg: ScaleDetectionExperiment, out_dir: str | Path, stride: int,
                seed: int) -> Path:
    """The run folder of the (stride, seed) unit of ``cfg`` run into ``out_dir``:
    ``out_dir / scale-detection-<hash> / runs / <RunConfig hash>`` (its ``train/checkpoints``
    hold ``init.pt`` and ``last.pt``, what ``diffeosense pooling --checkpoint`` reads)."""
    from .run import run_dir

    (c,) = [c for c in run_configs(cfg)
            if c.train.model_kwargs["stride"] == stride and c.train.seed == seed]
    return run_dir(c, Path(out_dir) / f"scale-detection-{cfg.folder_hash()}" / "runs")


def _old_unit_dir(root: Path, stride: int, seed: int) -> Path:
    """Where the code before the sweep engine kept a unit (``units/s{s}-seed{seed}``)."""
    return root / "units" / f"s{stride}-seed{seed}"


def _adopt_old_unit(c, old: Path, folder: Path) -> bool:
    """Move the training run of an old-layout unit folder ``old`` into the unit's run folder
    ``folder`` (when that has none), so that it is measured rather than trained again; a
    training whose config is not this unit's is refused. Returns whether it moved."""
    import os

    from ..train import _config_diff

    train_dir = old / "train"
    if not (train_dir / "checkpoints" / "last.pt").is_file() or (folder / "train").exists():
        return False
    try:
        written = json.loads((train_dir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{old} (a unit folder of an earlier diffeosense) has an unreadable "
                         f"train/config.json ({e}); move it away or delete it to retrain the "
                         f"unit") from None
    diff = _config_diff(written, c.train.to_dict())
    if diff:
        raise ValueError(f"{old} (a unit folder of an earlier diffeosense) trained another "
                         f"config than this unit ({diff[0]}); move it away or delete it to "
                         f"retrain the unit")
    with _io.run_lock(folder):  # the sweep engine's lock on the unit's run folder
        os.replace(train_dir, folder / "train")  # one rename: the training is in one place
    return True


def _drop_old_unit(old: Path) -> None:
    """Remove what an adopted old unit folder still holds (its tables and unit.json, now
    remeasured in the run folder), then ``units/`` when empty."""
    import shutil

    if old.is_dir() and not (old / "train").exists():
        shutil.rmtree(old)
    try:
        old.parent.rmdir()
    except OSError:  # not empty (other units left) or already gone
        pass


def _unit_info(c, folder: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    """A finished unit's training outcome, from its run folder (``done``, ``train/``)."""
    from .run import load_run

    r = load_run(folder)
    summary = json.loads((folder / "train" / "summary.json").read_text())
    history = [json.loads(line) for line in
               (folder / "train" / "metrics.jsonl").read_text().splitlines() if line]
    final = summary.get("final") or {}
    stride, seed = c.train.model_kwargs["stride"], c.train.seed
    return {
        "stride": stride, "seed": seed, "model_kwargs": c.train.model_kwargs,
        "lr": c.train.lr_value, "epochs_run": r["done"]["epochs_run"],
        "stopped": summary["stopped"],
        "train_loss": final.get("train_eval_loss", final.get("train_loss")),
        "train_error": final.get("train_eval_error", final.get("train_error")),
        "test_error": final.get("test_error"),
        "n_probes": int(r["tables"]["trained"].to_frame("full").iloc[-1].n_probes),
        # Every epoch's time, summed over the calls that trained it (metrics.jsonl), and what
        # this call spent on the unit (training and measuring; 0 when found finished).
        "train_seconds": float(sum(m.get("time", 0.0) for m in history)),
        "seconds_this_call": float(outcome.get("seconds", 0.0)),
        "run": c.hash(),
    }


def _mix(a: int, b: int) -> int:
    """A 63-bit seed from two integers (splitmix64 of their combination)."""
    z = (a * 0x9E3779B97F4A7C15 + b) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**63 - 1)


def _theory_depth(cfg: ScaleDetectionExperiment, stride: int, depth: int) -> int:
    """Largest k <= depth where the idealized net is defined at this N (0: none)."""
    if stride == 1:
        return depth if cfg.size >= 2 * cfg.filter_size else 0
    k = 0
    while k < depth and cfg.size % stride ** (k + 1) == 0 and cfg.size // stride ** (k + 1) >= 2:
        k += 1
    return k


def theory_table(cfg: ScaleDetectionExperiment):
    """Exact D_k, G_k, R_k of the idealized net for each stride (same N, F, s): a DataFrame
    with columns ``stride, k, D, G, R, d_num, g_num, den`` (ReLU; empty for tanh, where the
    exact theory does not apply)."""
    import pandas as pd

    from ..theory import pooling_sensitivities

    rows = []
    if cfg.activation != "relu":
        return pd.DataFrame(columns=["stride", "k", "D", "G", "R", "d_num", "g_num", "den"])
    for s, L in zip(cfg.strides, cfg.net_depths, strict=True):
        K = _theory_depth(cfg, s, L)
        if K < 1:
            continue
        th = pooling_sensitivities(depth=K, filter_size=cfg.filter_size, stride=s, n=cfg.size,
                                   amplitude=cfg.data_config().value, noise="gaussian",
                                   include_diag=True)
        for i in range(K):
            rows.append({"stride": s, "k": int(th.k[i]), "D": th.D[i], "G": th.G[i],
                         "R": th.R[i], "d_num": th.d_num[i], "g_num": th.g_num[i],
                         "den": th.den[i]})
    return pd.DataFrame(rows, columns=["stride", "k", "D", "G", "R", "d_num", "g_num", "den"])


def fit_exponents(cfg: ScaleDetectionExperiment, sensitivity, aggregate, theory):
    """Fitted vs predicted exponents on the activation layers ``fit_k_min <= k <= fit_k_max``.

    For each stride, state (init, trained) and quantity (D, G, R): ``slope`` +- ``stderr``,
    the least-squares fit of the seed-aggregated (geometric-mean) curve (power law in k for
    s = 1, exponential for s = F; :func:`~diffeosense.theory.fit_exponent`, stderr from the
    residuals); ``seed_mean`` +- ``seed_se``, the mean and standard error over seeds of the
    per-seed fitted slopes; ``predicted``, the asymptotic law
    (:func:`~diffeosense.theory.predicted_exponents`); ``theory_fit``, the same fit on the
    exact idealized curve over the window's intersection with the depths where it exists.
    The fits are unweighted least squares on log values, which are linear in the data, so
    ``slope == seed_mean`` (the log of a geometric mean is the mean of the logs); the two
    errors differ: ``stderr`` measures the curvature of the mean curve, ``seed_se`` the
    spread between seeds.
    """
    import pandas as pd

    from ..theory import fit_exponent, predicted_exponents

    rows = []
    views = [v for v in _VIEWS if "view" not in aggregate or (aggregate.view == v).any()]
    for view in views:
        agg_v = aggregate if "view" not in aggregate else aggregate[aggregate.view == view]
        sens_v = sensitivity if "view" not in sensitivity else sensitivity[
            sensitivity.view == view]
        rows += _fit_view(cfg, view, sens_v, agg_v, theory, fit_exponent, predicted_exponents)
    cols = ["stride", "filter_size", "view", "state", "quantity", "law", "k_min", "k_max",
            "slope", "stderr", "seed_mean", "seed_se", "n_seeds", "predicted", "theory_fit",
            "theory_k_max"]
    return pd.DataFrame(rows, columns=cols)


def _fit_view(cfg, view, sensitivity, aggregate, theory, fit_exponent, predicted_exponents):
    rows = []
    act = aggregate[aggregate.layer.str.contains(r"(?:^|\.)act\d+$", regex=True)]
    act_all = sensitivity[sensitivity.layer.str.contains(r"(?:^|\.)act\d+$", regex=True)]
    for s, L in zip(cfg.strides, cfg.net_depths, strict=True):
        pred = predicted_exponents(s, cfg.activation)
        law = pred["law"]
        k_lo, k_hi = cfg.fit_k_min, min(L, cfg.fit_k_max or L)
        th = theory[theory.stride == s]
        for state in ("init", "trained"):
            a = act[(act.stride == s) & (act.state == state)].sort_values("k")
            for q in ("D", "G", "R"):
                row = {"stride": s, "filter_size": cfg.filter_size, "view": view,
                       "state": state,
                       "quantity": q, "law": law, "k_min": k_lo, "k_max": k_hi,
                       "predicted": pred[q]}
                row.update(_safe_fit(fit_exponent, a.k, a[q], law, k_lo, k_hi, "slope",
                                     "stderr"))
                slopes = []
                for _, g in act_all[(act_all.stride == s) & (act_all.state == state)].groupby(
                        "seed"):
                    g = g.sort_values("k")
                    f = _safe_fit(fit_exponent, g.k, g[q], law, k_lo, k_hi, "slope", "stderr")
                    if math.isfinite(f["slope"]):
                        slopes.append(f["slope"])
                row["n_seeds"] = len(slopes)
                row["seed_mean"] = float(np.mean(slopes)) if slopes else math.nan
                row["seed_se"] = (float(np.std(slopes, ddof=1) / math.sqrt(len(slopes)))
                                  if len(slopes) > 1 else math.nan)
                tf = _safe_fit(fit_exponent, th.k, th[q], law, k_lo, k_hi, "theory_fit",
                               "theory_stderr") if len(th) else {"theory_fit": math.nan}
                row["theory_fit"] = tf["theory_fit"]
                row["theory_k_max"] = int(min(k_hi, th.k.max())) if len(th) else 0
                rows.append(row)
    return rows


def _safe_fit(fit_exponent, k, values, law, k_lo, k_hi, name, err_name) -> dict[str, float]:
    k = np.asarray(k, dtype=float)
    v = np.asarray(values, dtype=float)
    sel = (k >= k_lo) & (k <= k_hi) & np.isfinite(v) & (v > 0)
    if sel.sum() < 2:
        return {name: math.nan, err_name: math.nan}
    f = fit_exponent(k[sel], v[sel], law=law)
    return {name: f.slope, err_name: f.stderr}


# ---------------------------------------------------------------------------------- run


def run(cfg: ScaleDetectionExperiment | None = None, out_dir: str | Path = "runs",
        progress: bool = True, *, backend: str = "local", workers: int | None = None,
        **backend_options: Any) -> ScaleDetectionResult:
    """Train and measure every (stride, seed) unit, fit exponents, write the tables.

    A pure function of ``cfg``: the results go to ``out_dir / f"scale-detection-{hash}"``.
    The units (:func:`run_configs`) run through
    :func:`~diffeosense.experiments.sweep.run_sweep` on ``backend`` (``"local"``: a pool of
    ``workers`` processes, default the number of cores; ``"ray"``, ``"slurm"`` with their
    ``backend_options``): finished units are loaded, not recomputed; a unit killed while
    training resumes from its last epoch checkpoint. A unit that fails leaves its traceback in
    its folder; the others finish, then ``RuntimeError`` names the failed ones. A unit folder
    of the earlier layout (``units/s{s}-seed{seed}/train``) is adopted: its training moves
    into the unit's run folder and is measured there, not repeated. Every file is written
    atomically.

    Returns:
        :class:`ScaleDetectionResult` with the tables (also in the run folder).
    """
    cfg = cfg or preset("small")
    root = Path(out_dir) / f"scale-detection-{cfg.folder_hash()}"
    with _io.run_lock(root):  # one process per run folder; a second gets RunFolderBusy
        return _run_locked(cfg, root, progress, backend, workers, backend_options)


def _run_locked(cfg: ScaleDetectionExperiment, root: Path, progress: bool, backend: str,
                workers: int | None, backend_options: dict[str, Any]
                ) -> ScaleDetectionResult:  # fmt: skip
    import pandas as pd

    from ..data.scale_detection import make_scale_detection
    from ..sensitivity import aggregate
    from .run import load_run, run_dir
    from .sweep import outcome_printer, run_sweep

    _io.clean_stale_temporaries(root)  # we own the folder: a .tmp left here is a killed write
    data = make_scale_detection(cfg.data_config())
    if len(data.x_test) < 2:
        raise ValueError("the test split holds fewer than 2 pairs: the sensitivities need "
                         "probes; lower train_size or enlarge size")
    prov = provenance()
    _io.write_json(root / "config.json", {"config": cfg.to_dict(), "resolved": cfg.resolved(),
                                          "config_hash": cfg.folder_hash(),
                                          "provenance": prov})
    configs = run_configs(cfg)
    runs = root / "runs"
    olds = [_old_unit_dir(root, c.train.model_kwargs["stride"], c.train.seed) for c in configs]
    for c, old in zip(configs, olds, strict=True):
        if _adopt_old_unit(c, old, run_dir(c, runs)) and progress:
            print(f"  unit {c.hash()}: adopted the training of {old}", flush=True)

    report = run_sweep(configs, runs, backend, workers=workers,
                       on_result=outcome_printer("unit", progress), **backend_options)
    for o, old in zip(report.outcomes, olds, strict=True):
        if o["status"] != "failed" and old.exists():
            _drop_old_unit(old)
    report.raise_if_failed(configs, "the scale-detection experiment",
                           lambda c: f"stride {c.train.model_kwargs['stride']} seed "
                                     f"{c.train.seed}")
    units, ran, skipped = [], [], []
    frames, per_state = [], {}
    for c, o in zip(configs, report.outcomes, strict=True):
        s, seed = c.train.model_kwargs["stride"], c.train.seed
        (skipped if o["status"] == "skipped" else ran).append((s, seed))
        folder = run_dir(c, runs)
        units.append(_unit_info(c, folder, o))
        tables = load_run(folder)["tables"]
        for state in ("init", "trained"):
            res = tables[state]
            per_state.setdefault((s, state), []).append(res)
            frames.append(_tidy(res, stride=s, seed=seed, state=state))
    sensitivity = pd.concat(frames, ignore_index=True)
    agg_frames = []
    for (s, state), results in per_state.items():
        # One seed: keep its own (per-probe) standard errors rather than NaN spreads.
        agg_res = results[0] if len(results) == 1 else aggregate(results)
        agg_frames.append(_tidy(agg_res, stride=s, state=state))
    agg = pd.concat(agg_frames, ignore_index=True)
    theory = theory_table(cfg)
    exponents = fit_exponents(cfg, sensitivity, agg, theory)
    _io.check_run_folder(root)  # deleted during the run: fail rather than re-create half of it
    for name, table in (("sensitivity", sensitivity), ("aggregate", agg), ("theory", theory),
                        ("exponents", exponents)):  # fmt: skip
        _io.write_table(root / f"{name}.csv", table, {"config_hash": cfg.folder_hash()})
    _io.write_json(root / "summary.json", {
        "config": cfg.to_dict(), "resolved": cfg.resolved(), "config_hash": cfg.folder_hash(),
        "units": units,
        "exponents": exponents.to_dict("records"), "provenance": prov,
    })
    return ScaleDetectionResult(cfg, root, sensitivity, agg, theory, exponents, units, ran,
                                skipped)


def load_result(path: str | Path) -> ScaleDetectionResult:
    """Read a finished run folder written by :func:`run`."""

    root = Path(path)
    summary = root / "summary.json"
    if not summary.exists():
        raise FileNotFoundError(f"{root} holds no finished scale-detection run (no summary.json)")
    blob = json.loads(summary.read_text())
    cfg = ScaleDetectionExperiment.from_dict(blob["config"])
    tables = {name: _io.read_table(root / f"{name}.csv")[0]
              for name in ("sensitivity", "aggregate", "theory", "exponents")}
    return ScaleDetectionResult(cfg, root, tables["sensitivity"], tables["aggregate"],
                                tables["theory"], tables["exponents"], blob["units"])


def format_exponents(exponents) -> str:
    """The exponent table as aligned text (for the CLI and reports)."""
    lines = [f"{'s':>2} {'view':<13}{'state':<8}{'X':<2}{'law':<6}{'k':<6}{'fit':>16}{'seeds':>18}"
             f"{'theory(N)':>11}{'predicted':>10}"]
    for r in exponents.itertuples():
        fit = "n/a" if not math.isfinite(r.slope) else (
            f"{r.slope:+.3f}+-{r.stderr:.3f}" if math.isfinite(r.stderr) else f"{r.slope:+.3f}")
        seeds = (f"{r.seed_mean:+.3f}+-{r.seed_se:.3f}" if math.isfinite(r.seed_se)
                 else (f"{r.seed_mean:+.3f}" if math.isfinite(r.seed_mean) else "n/a"))
        th = f"{r.theory_fit:+.3f}" if math.isfinite(r.theory_fit) else "n/a"
        law = "pow" if r.law == "power" else "exp"
        view = getattr(r, "view", "full")
        lines.append(f"{r.stride:>2} {view:<13}{r.state:<8}{r.quantity:<2}{law:<6}"
                     f"{f'{r.k_min}-{r.k_max}':<6}{fit:>16}{seeds:>18}{th:>11}"
                     f"{r.predicted:>+10.3f}")
    return "\n".join(lines)
