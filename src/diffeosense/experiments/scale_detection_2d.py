r"""The 2D scale-detection task on the paper's deep nets (Tomasini et al. 2022, Figs. 8, 9).

``d x d`` images (d = 28) with two active pixels of value ``d^2 / 2``, label +1 when their
Euclidean distance is below ``xi - g/2``, -1 from ``xi + g/2`` (xi = 14, g = 2; science.md §4;
:mod:`diffeosense.data.scale_detection`). Each architecture is trained with one output and the
hinge loss by :func:`diffeosense.train.train` on the dataset ``scale-detection-2d:...`` (P
pairs, test ``4 P``), the best-test-error checkpoint is kept, and
:func:`diffeosense.sensitivity.measure` gives D_k, G_k, R_k at every layer with the task's
own diffeomorphism (each active pixel moves one step to one of its 4 neighbours, moves that
would change the label undone: ``pixel-move``) and norm-matched white noise, at
initialization and for the best checkpoint. Expected (the paper): across nets, the test error
grows with D and R at the output and falls with G; inside each net, after training, D_k falls
and G_k rises with depth.

Choices (fields of :class:`DeepScaleDetectionExperiment`, saved beside the results):

* Recipe (``paper`` preset): SGD, lr 0.05, momentum 0.9, weight decay 5e-4 on weights only,
  cosine schedule, batch 128, 300 epochs, P = 1024, test 4P = 4096, best checkpoint.
* ``quick`` preset, for 2 CPU cores: P = 1024 as the paper, test 1024 (not 4P: evaluating
  4096 images every epoch costs as much as training), 20 epochs, 256 probes, the paper's
  recipe otherwise, except VGG11 at lr 0.01. Chosen from training curves alone, before any
  sensitivity was measured (``docs/results/scale_detection_2d_quick_curves.csv``, seed 0,
  1 thread): at P = 256 (12 epochs, the former quick preset) VGG11-BN and ResNet18 stay at
  chance with lr 0.05, and ResNet18 fits the 256 pairs but not the test set at lr 0.01 or
  0.002 (43-46 %); at P = 1024 with lr 0.05 LeNet reaches 4.7 % (30 epochs), VGG11-BN 0.1 % (epoch 12 of 30),
  ResNet18 0 of 1024 wrong (epoch 15 of 20), while VGG11 is stuck at chance (50 %, train and
  test) from epoch 9 on, and reaches 0.8 % (epoch 15 of 20) at lr 0.01.
* Probes: ``n_probes`` test images, balanced across the two classes; the same probes, moves
  and noise at initialization and after training (seed of the measurement = network seed).
* Layers: every node of the graph (``layers="all"``); the by-layer figure uses the
  activations (ReLUs) against the relative depth ``k / K`` so nets of different depth share
  an axis. The output row is the scalar score.

Each (model, seed) unit is a :class:`~diffeosense.experiments.run.RunConfig` (train, then
measure the ``init`` and ``best`` checkpoints on balanced probes with the task's move), run by
the sweep engine (:func:`~diffeosense.experiments.sweep.run_sweep`): units execute in parallel
on a local process pool, Ray or SLURM (``backend``, ``workers``), a killed unit resumes from
its checkpoints, and finished units are not re-run.

Run folder ``out_dir / "scale-detection-2d-<hash>"`` (hash of the config without ``models``,
``seeds`` and ``device``, so more models or seeds re-use the finished units)::

    config.json
    runs/<run hash>/        one unit: train/ (the training run), sensitivity_init.csv,
                            sensitivity_best.csv, done (a sweep run folder)
    runs/sweep.json         the units' outcomes
    sensitivity.csv         every unit, tidy (model, seed, state, layer, depth, kind, D, G, R)
    summary.csv             one row per unit: test error, D, G, R at the output (trained, init)

>>> cfg = preset("quick")
>>> cfg.models, cfg.train_size, cfg.test_size_value, cfg.lr_by_model
(('lenet', 'vgg11', 'vgg11bn', 'resnet18'), 1024, 1024, {'vgg11': 0.01})
>>> cfg.dataset_name()
'scale-detection-2d:size=28,xi=14.0,gap=2.0,test_size=1024'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _io
from ..provenance import config_hash, provenance

__all__ = ["DeepScaleDetectionExperiment", "DeepScaleDetectionResult", "PRESETS", "preset",
           "run", "run_configs", "load_result"]


@dataclass(frozen=True)
class DeepScaleDetectionExperiment:
    """Everything the 2D deep-net experiment depends on (saved as ``config.json``).

    Data: size (d), xi, gap, train_size (P), test_size (None: 4 P), data_seed.
    Nets: models (registered names, built with one input channel and one output).
    Training (:class:`~diffeosense.train.TrainConfig`): lr, momentum, weight_decay, schedule,
    batch_size, epochs; ``lr_by_model`` ({model: lr}) replaces ``lr`` for the nets it names.
    Measurement: n_probes (balanced across classes), measure_batch_size.
    seeds: network seeds; device: where to train and measure (not part of the hash).
    """

    preset: str = "paper"
    size: int = 28
    xi: float = 14
    gap: float = 2
    train_size: int = 1024
    test_size: int | None = None
    data_seed: int = 0
    models: tuple[str, ...] = ("lenet", "vgg11", "vgg11bn", "resnet18")
    lr: float = 0.05
    lr_by_model: dict[str, float] = field(default_factory=dict)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    batch_size: int = 128
    epochs: int = 300
    n_probes: int = 500
    measure_batch_size: int = 128
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("models", "seeds"):
            v = getattr(self, name)
            if not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        from ..models import list_models, spec_kind

        # Any model spec (torchvision:, timm:, FILE.py:F, pkg.mod:F); a bare name must be
        # registered (a typo fails here, not after the first units have trained).
        unknown = [m for m in self.models if spec_kind(m) == "registry" and m not in
                   list_models()]
        if unknown or not self.models:
            raise ValueError(f"unknown or no models {unknown}; give model specs: registered "
                             f"names ({', '.join(list_models())}), torchvision:NAME, "
                             f"timm:NAME, FILE.py:FACTORY or package.module:FACTORY")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"give distinct seeds, got {list(self.seeds)}")
        if self.n_probes < 2:
            raise ValueError(f"n_probes must be >= 2, got {self.n_probes}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        object.__setattr__(self, "lr_by_model", dict(self.lr_by_model))
        bad = {m: v for m, v in self.lr_by_model.items()
               if (m not in self.models and m not in list_models()) or isinstance(v, bool)
               or not isinstance(v, int | float) or not 0 < v < float("inf")}
        if bad:
            raise ValueError(f"lr_by_model maps model specs (of the experiment, or registered) to "
                             f"learning rates > 0, got {bad}")
        self.task()  # validates size, xi, gap, P

    @property
    def test_size_value(self) -> int:
        return 4 * self.train_size if self.test_size is None else self.test_size

    def dataset_name(self) -> str:
        """The ``diffeosense train --data`` spec of the task."""
        return (f"scale-detection-2d:size={self.size},xi={float(self.xi)},"
                f"gap={float(self.gap)},test_size={self.test_size_value}")

    def task(self):
        from ..data.scale_detection import dataset_task

        return dataset_task(self.dataset_name(), self.train_size, self.data_seed)

    def train_config(self, model: str, seed: int):
        from ..data import DataConfig
        from ..train import TrainConfig

        return TrainConfig(
            model=model, data=DataConfig(name=self.dataset_name(), P=self.train_size,
                                         seed=self.data_seed, download=False),
            epochs=self.epochs, batch_size=self.batch_size, optimizer="sgd",
            lr=float(self.lr_by_model.get(model, self.lr)),
            momentum=self.momentum, weight_decay=self.weight_decay, schedule=self.schedule,
            loss="hinge", seed=seed, device=self.device, keep_every=0,
        )

    def with_learning_rates(self, lr: float | None = None,
                            by_model: dict[str, float] | None = None
                            ) -> DeepScaleDetectionExperiment:  # fmt: skip
        """The config with other learning rates: a plain ``lr`` replaces the rate of every net
        (the preset's per-net rates too) except those named in ``by_model``; ``by_model``
        alone changes the nets it names and keeps the others' rates.

        >>> q = preset("quick")
        >>> q.with_learning_rates(by_model={"lenet": 0.1}).lr_by_model
        {'vgg11': 0.01, 'lenet': 0.1}
        >>> q.with_learning_rates(0.02).lr_by_model, q.with_learning_rates(0.02).lr
        ({}, 0.02)
        """
        by_model = dict(by_model or {})
        if lr is None:
            return dataclasses.replace(self, lr_by_model={**self.lr_by_model, **by_model})
        return dataclasses.replace(self, lr=lr, lr_by_model=by_model)

    def to_dict(self) -> dict[str, Any]:
        return _io.to_jsonable(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeepScaleDetectionExperiment:
        return _io.dataclass_from_dict(cls, d)

    def folder_hash(self) -> str:
        d = self.to_dict()
        for key in ("models", "seeds", "device"):
            d.pop(key)
        if not d["lr_by_model"]:
            d.pop("lr_by_model")  # the hashes of configs from before the field existed
        return config_hash(d)


PRESETS: dict[str, DeepScaleDetectionExperiment] = {
    # The paper's recipe (the field defaults): P = 1024, test 4P, 300 epochs, lr 0.05, 500
    # probes.
    "paper": DeepScaleDetectionExperiment(preset="paper"),
    # Minutes on a CPU core for the four nets: the paper's recipe and P, 20 epochs, a smaller
    # test split (evaluating 4096 images every epoch costs as much as training), 256 probes;
    # VGG11 at lr 0.01 (it is stuck at chance at 0.05 here). Chosen from training curves only
    # (module docstring).
    "quick": DeepScaleDetectionExperiment(
        preset="quick", train_size=1024, test_size=1024, epochs=20, n_probes=256,
        lr_by_model={"vgg11": 0.01}),
}


def preset(name: str = "quick", **overrides: Any) -> DeepScaleDetectionExperiment:
    """The config of a preset (``"quick"`` or ``"paper"``), with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass
class DeepScaleDetectionResult:
    """What :func:`run` returns: ``sensitivity`` (tidy, every unit and layer) and ``summary``
    (one row per unit) as ``pandas.DataFrame``s, also saved as CSV."""

    config: DeepScaleDetectionExperiment
    out_dir: Path
    sensitivity: Any
    summary: Any
    units_run: list[tuple[str, int]] = field(default_factory=list)
    units_skipped: list[tuple[str, int]] = field(default_factory=list)


def run_configs(cfg: DeepScaleDetectionExperiment) -> list:
    """The units: one :class:`~diffeosense.experiments.run.RunConfig` per (model, seed), in
    that order: ``cfg.train_config(model, seed)``, measured at every layer at ``init`` and on
    the ``best`` checkpoint, on ``n_probes`` balanced test probes, with the task's
    label-preserving pixel move, measurement seed = network seed."""
    from ..probes import task_perturbation
    from .run import RunConfig

    return [RunConfig(train=cfg.train_config(m, seed), layers="all", stages=["init", "best"],
                      n_probes=cfg.n_probes, probe_order="balanced",
                      perturbation=task_perturbation(cfg.dataset_name()), seed=seed,
                      measure_kwargs={"batch_size": cfg.measure_batch_size})
            for m in cfg.models for seed in cfg.seeds]


def run(cfg: DeepScaleDetectionExperiment | None = None, out_dir: str | Path = "runs",
        progress: bool = True, *, backend: str = "local", workers: int | None = None,
        **backend_options: Any) -> DeepScaleDetectionResult:
    """Train and measure every (model, seed) unit; write ``sensitivity.csv``, ``summary.csv``.

    A pure function of ``cfg`` (up to the device's floating point): finished units are
    loaded, a killed training resumes from its last epoch. The units run through
    :func:`~diffeosense.experiments.sweep.run_sweep` on ``backend`` (``"local"``: a pool of
    ``workers`` processes, default the number of cores; ``"ray"``, ``"slurm"`` with their
    ``backend_options``). A unit that fails leaves its traceback in its folder; the others
    finish, then ``RuntimeError`` names the failed ones.
    """
    cfg = cfg or preset("quick")
    root = Path(out_dir) / f"scale-detection-2d-{cfg.folder_hash()}"
    with _io.run_lock(root):  # one process per run folder; a second gets RunFolderBusy
        return _run_locked(cfg, root, progress, backend, workers, backend_options)


def _run_locked(cfg: DeepScaleDetectionExperiment, root: Path, progress: bool, backend: str,
                workers: int | None, backend_options: dict[str, Any]
                ) -> DeepScaleDetectionResult:  # fmt: skip
    import pandas as pd

    from .run import load_run, run_dir
    from .sweep import outcome_printer, run_sweep

    _io.clean_stale_temporaries(root)  # we own the folder: a .tmp left here is a killed write
    prov = provenance()
    _io.write_json(root / "config.json", {"config": cfg.to_dict(),
                                          "config_hash": cfg.folder_hash(), "provenance": prov})
    configs = run_configs(cfg)

    report = run_sweep(configs, root / "runs", backend, workers=workers,
                       on_result=outcome_printer("unit", progress), **backend_options)
    report.raise_if_failed(configs, "the 2D experiment",
                           lambda c: f"{c.train.model} seed {c.train.seed}")
    frames, rows, ran, skipped = [], [], [], []
    for c, o in zip(configs, report.outcomes, strict=True):
        model_name, seed = c.train.model, c.train.seed
        (skipped if o["status"] == "skipped" else ran).append((model_name, seed))
        folder = run_dir(c, root / "runs")
        r = load_run(folder)
        best = r["tables"]["best"]
        history = [json.loads(line) for line in
                   (folder / "train" / "metrics.jsonl").read_text().splitlines() if line]
        at_best = next((m for m in history if m["epoch"] == r["done"]["best_epoch"]), {})
        row = {"model": model_name, "seed": seed, "epochs_run": r["done"]["epochs_run"],
               "best_epoch": r["done"]["best_epoch"], "test_error": best.config["test_error"],
               "train_error": at_best.get("train_error"),
               "n_probes": int(best.to_frame("full").iloc[-1].n_probes)}
        for state, table in (("init", r["tables"]["init"]), ("trained", best)):
            df = table.to_frame("full")
            out = df.iloc[-1]
            suffix = "" if state == "trained" else "_init"
            row.update({f"{q}{suffix}": float(out[q]) for q in ("D", "G", "R")})
            df.insert(0, "state", state)
            df.insert(0, "seed", seed)
            df.insert(0, "model", model_name)
            frames.append(df)
        rows.append(row)
    sensitivity = pd.concat(frames, ignore_index=True)
    summary = pd.DataFrame(rows)
    _io.check_run_folder(root)  # deleted during the run: fail rather than re-create half of it
    for name, table in (("sensitivity", sensitivity), ("summary", summary)):
        _io.write_table(root / f"{name}.csv", table, {"config_hash": cfg.folder_hash()})
    return DeepScaleDetectionResult(cfg, root, sensitivity, summary, ran, skipped)


def load_result(path: str | Path) -> DeepScaleDetectionResult:
    """Read a finished run folder written by :func:`run`."""
    root = Path(path)
    if not (root / "summary.csv").exists():
        raise FileNotFoundError(f"{root} holds no finished scale-detection-2d run "
                                f"(no summary.csv)")
    cfg = DeepScaleDetectionExperiment.from_dict(
        json.loads((root / "config.json").read_text())["config"])
    return DeepScaleDetectionResult(cfg, root, _io.read_table(root / "sensitivity.csv")[0],
                                    _io.read_table(root / "summary.csv")[0])
