"""Training engine: the paper's recipe, checkpoints that never lose work, exact resumption.

Recipe (Tomasini et al. 2022, after kuangliu/pytorch-cifar): SGD with momentum 0.9, lr 0.1,
weight decay 5e-4 on weights only (not biases nor norm parameters), cosine schedule over the
epochs, batch 128, cross-entropy, best-test-accuracy checkpoint; fully connected nets use
Adam (lr 1e-3, no decay). Binary tasks with a scalar output and labels +-1 use the hinge
loss ``mean(relu(1 - y f(x)))``.

Exact resumption. All randomness of epoch ``e`` (batch order, augmentation, noise, and the
global RNG that dropout uses, seeded inside ``torch.random.fork_rng`` so it never leaks) is
drawn from generators seeded by ``(seed, e)``. The model and optimizer state are saved at the
end of every epoch, ``last.pt`` last of all (the commit point), each file written atomically.
A run killed at any moment restarts the unfinished epoch from ``last.pt`` and ends with
bit-identical weights to an uninterrupted run (same device, same thread count).

Run folder layout (``out_dir``)::

    config.json          resolved TrainConfig + provenance + config hash
    metrics.jsonl        one JSON line per epoch (rewritten whole, atomically)
    summary.json         final and best metrics
    checkpoints/init.pt  weights at initialization (epoch 0)
    checkpoints/epoch_0001.pt ...  every ``keep_every`` epochs (and the last epoch)
    checkpoints/best.pt  best test accuracy;  checkpoints/last.pt  latest epoch

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(64, 1, 8, 8, generator=g); y = (x.mean((1, 2, 3)) > 0).long()
>>> cfg = TrainConfig(model="simplecnn", epochs=2, batch_size=16, lr=0.05)
>>> net = create_model("simplecnn", in_channels=1, num_classes=2, depth=1, width=4)
>>> res = fit(net, (x, y), (x, y), cfg, progress=False)
>>> [m["epoch"] for m in res.history]
[1, 2]
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import pickle
import re
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._io import (
    RunLock,
    clean_stale_temporaries,
    dataclass_from_dict,
    run_lock,
    to_jsonable,
    write_bytes,
    write_json,
    write_text,
)
from ._validate import check_device, check_types
from .data import DataConfig, ImageDataset, load_dataset
from .models import create_model, normalize_spec
from .models.specs import size_option
from .provenance import config_hash, provenance

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "fit",
    "evaluate",
    "build_model",
    "load_checkpoint",
    "CHECKPOINT_FORMAT",
    "LossExplosionWarning",
]

CHECKPOINT_FORMAT = "diffeosense.checkpoint/1"
_OPTIMIZERS = ("sgd", "adam", "auto")
_SCHEDULES = ("cosine", "constant")
_LOSSES = ("cross_entropy", "hinge")
PRECISIONS = ("fp32", "bf16")
# Fields added after runs were made, at the values that give the runs made before them: the
# folder hashes leave them out at these values (experiments.run, cli.train).
TRAIN_LATER_DEFAULTS = {"precision": "fp32", "channels_last": False, "compile": False}
# Keys that may change between a run and its resumption without changing the weights.
_RESUME_FREE_KEYS = {"device", "eval_batch_size", "keep_every", "data.root", "data.download"}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` beside the run.

    Attributes:
        model, model_kwargs: ``create_model(model, in_channels, num_classes, **model_kwargs)``:
            any model spec (a registered name, ``torchvision:NAME``, ``timm:NAME``,
            ``FILE.py:FACTORY``, ``package.module:FACTORY``; :mod:`diffeosense.models.specs`).
        data: the :class:`~diffeosense.data.DataConfig` (dataset, P, augmentation, noise).
        epochs, batch_size: the budget and the SGD batch.
        optimizer: "sgd", "adam" or "auto" (Adam for fully connected ``fc*`` nets, else SGD).
        lr: None -> 0.1 for SGD, 1e-3 for Adam.
        momentum: SGD momentum.
        weight_decay: None -> 5e-4 for SGD, 0 for Adam; applied to weights only (tensors of
            dimension >= 2), never to biases or normalization parameters.
        schedule: "cosine" (lr_e = lr * (1 + cos(pi (e-1) / epochs)) / 2 for epoch e = 1..)
            or "constant".
        loss: "cross_entropy" or "hinge" (scalar output, labels +-1).
        seed: seeds the initialization and every epoch's randomness.
        device: "cpu", "cuda", "cuda:1", or "auto" (cuda when available).
        eval_batch_size: batch for evaluation (does not change the weights).
        keep_every: keep ``epoch_XXXX.pt`` every k epochs (0: none; the last epoch is kept
            whenever k > 0).
        stop_at_zero_loss: after every epoch, evaluate the loss on the whole training set
            (eval mode, no augmentation; the training noise, if any, drawn afresh) and stop
            once it is exactly 0 (hinge: every margin y f(x) >= 1).
        precision, channels_last, compile: the opt-in fast path (for GPUs; the defaults are
            the plain fp32 loop). ``precision="bf16"``: the training forward pass and loss
            under ``torch.autocast(bfloat16)`` (weights, gradients and optimizer in fp32; no
            loss scaling needed), and the training loss is checked once per epoch instead of
            after every batch (no host synchronization per batch: a diverging epoch is
            refused at its end, and its weights are never checkpointed). ``channels_last``:
            the model and 4D batches in ``torch.channels_last``. ``compile``: the training
            forward through ``torch.compile`` (evaluation and checkpoints use the model
            itself). Evaluation stays fp32. Resumption is bit-exact on either path.
    """

    model: str = "simplecnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "auto"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "cosine"
    loss: str = "cross_entropy"
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 1000
    keep_every: int = 1
    stop_at_zero_loss: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DataConfig.from_dict(self.data)
        check_types(
            self, lr={"lo": 0, "lo_open": True, "optional": True},
            momentum={"lo": 0, "hi": 1, "hi_open": True}, weight_decay={"lo": 0, "optional": True},
        )  # fmt: skip
        check_device("TrainConfig.device", self.device)
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch sizes >= 1")
        if self.keep_every < 0:
            raise ValueError(f"keep_every must be >= 0, got {self.keep_every}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} ('bf16': autocast "
                             f"bfloat16 training, the fast path), got {self.precision!r}")

    # -- resolved recipe ------------------------------------------------------------------
    @property
    def optimizer_name(self) -> str:
        if self.optimizer != "auto":
            return self.optimizer
        return "adam" if self.model.lower().startswith("fc") else "sgd"

    @property
    def lr_value(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 1e-3 if self.optimizer_name == "adam" else 0.1

    @property
    def weight_decay_value(self) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 0.0 if self.optimizer_name == "adam" else 5e-4

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (1-based), as CosineAnnealingLR(T_max=epochs)
        stepped once per epoch."""
        if self.schedule == "constant" or self.epochs <= 0:
            return self.lr_value
        return self.lr_value * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, d)


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained model (final weights) and the run's history."""

    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_error: float | None
    stopped: str  # "epochs" or "zero_loss"
    out_dir: Path | None = None

    @property
    def final(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None


# ---------------------------------------------------------------------------------------------
# Pieces.


def _derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from ``(seed, *keys)``: independent streams per epoch and purpose."""
    blob = "/".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & (2**63 - 1)


def _resolve_device(device: str) -> torch.device:
    from ._validate import available_device

    return available_device(device)


def build_model(cfg: TrainConfig, data: ImageDataset) -> tuple[nn.Module, dict[str, Any]]:
    """Create ``cfg.model`` for ``data`` with a seeded initialization.

    Returns the model and its spec ``{"name", "kwargs"}`` (enough to rebuild it). The
    initialization draws from the global RNG inside ``torch.random.fork_rng`` seeded from
    ``cfg.seed``, so it is reproducible and leaves the caller's RNG untouched.
    """
    num_classes = 1 if cfg.loss == "hinge" else data.num_classes
    kwargs: dict[str, Any] = {"in_channels": data.in_channels, "num_classes": num_classes}
    kwargs.update(size_option(cfg.model, tuple(data.x_train.shape[1:]), cfg.model_kwargs))
    kwargs.update(cfg.model_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_derive_seed(cfg.seed, "init"))
        model = create_model(cfg.model, **kwargs)
    _check_input_shape(model, cfg.model, data)
    # A factory file's path made absolute: the checkpoint rebuilds from any folder.
    return model, {"name": normalize_spec(cfg.model), "kwargs": kwargs}


def _check_input_shape(model: nn.Module, name: str, data: ImageDataset) -> None:
    """One forward pass of two training samples (eval mode, no grad, RNG untouched): a
    model that cannot take the dataset's inputs fails here, with the reason, not later."""
    x = data.x_train[:2]
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()(x)
    except (RuntimeError, ValueError) as e:
        shape = list(x.shape[1:])
        kinds = {type(m) for m in model.modules()}
        if nn.Conv1d in kinds and nn.Conv2d not in kinds and x.dim() == 4:
            need = (f"{name} is a 1D network: it needs signals [C, L], not images; give "
                    "it a scale-detection-1d task or a file of signals (PATH.npz with x "
                    "[N, C, L]), or train it with fit()")  # fmt: skip
        elif nn.Conv2d in kinds and x.dim() == 3:
            need = f"{name} needs images [C, H, W]; use an image dataset"
        else:
            need = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise ValueError(
            f"model {name} cannot take the inputs of dataset {data.name!r} (samples of shape "
            f"{shape}): {need}"
        ) from None
    finally:
        model.train(was_training)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Weight decay on weights only: tensors of dim >= 2 (conv / linear kernels); biases and
    # BatchNorm scales/shifts are 1D and are not decayed (the paper's recipe).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay_value)
    if cfg.optimizer_name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr_value)
    return torch.optim.SGD(groups, lr=cfg.lr_value, momentum=cfg.momentum)


def _loss_and_errors(
    out: torch.Tensor, y: torch.Tensor, loss: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, number of errors) for a batch. Hinge: out [B] or [B, 1], y in {-1, +1};
    an output of exactly 0 counts as an error."""
    if loss == "hinge":
        f = out.reshape(len(out), -1)
        if f.shape[1] != 1:
            raise ValueError(f"hinge loss needs a scalar output per input, got {tuple(out.shape)}")
        f = f[:, 0]
        return (1.0 - y * f).clamp_min(0.0).mean(), (y * f <= 0).sum()
    return F.cross_entropy(out, y), (out.argmax(dim=1) != y).sum()


def _check_labels(data: ImageDataset, loss: str) -> None:
    y = data.y_train
    if y is None:
        raise ValueError(f"dataset {data.name!r} has no labels (no y in its file, no labels "
                         f"files): training needs them; measure and pooling work without "
                         f"labels (D, G and R need none)")
    if loss == "hinge":
        if not y.is_floating_point() or not bool(((y == 1) | (y == -1)).all()):
            raise ValueError("hinge loss needs float labels in {-1, +1} (binary task)")
    elif y.is_floating_point():
        raise ValueError("cross-entropy needs integer class labels; use loss='hinge' for +-1")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageDataset,
    split: str = "test",
    loss: str = "cross_entropy",
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Mean loss and error of ``model`` (eval mode) on a split, with the dataset's noise
    for that split drawn from ``generator``; no augmentation. Returns {"loss", "error"}."""
    was_training = model.training
    model.eval()
    tot_loss = torch.zeros((), dtype=torch.float64)
    tot_err, n = 0, 0
    for xb, yb in data.batches(split, batch_size, shuffle=False, generator=generator,
                               augment=False):  # fmt: skip
        out = model(xb)
        l, e = _loss_and_errors(out, yb, loss)
        tot_loss += l.double().cpu() * len(yb)
        tot_err += int(e)
        n += len(yb)
    model.train(was_training)
    return {"loss": float(tot_loss) / n, "error": tot_err / n}


# ---------------------------------------------------------------------------------------------
# Checkpoints.


def _read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint dict; a clear ValueError for anything but a complete
    diffeosense checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, KeyError, AttributeError, IndexError) as e:  # fmt: skip
        raise ValueError(_unreadable(path, e)) from None
    required = {"format", "epoch", "model_state", "config", "model_spec"}
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a diffeosense checkpoint (format {CHECKPOINT_FORMAT})")
    missing = required - set(ckpt)
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: missing {sorted(missing)}")
    return ckpt


_CHECKPOINT_NAME = re.compile(r"(init|last|best|epoch_\d+)\.pt")


def _unreadable(path: Path, e: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words that say what the file is
    not. Never torch's own advice to retry with ``weights_only=False``: for a file of unknown
    origin that would run its code. A damaged checkpoint of a run (a ``train`` checkpoint
    name, in a ``checkpoints/`` folder) is pointed to the run's other checkpoints."""
    msg = str(e)
    if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in msg:
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        what = f" (such as {found.group(1)})" if found else ""
        return (f"{path} is not a diffeosense checkpoint: it holds pickled Python objects"
                f"{what}, not only tensors and plain values, and was not loaded (unpickling "
                f"runs code from the file)")
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), "")
    detail = type(e).__name__ + (f": {first}" if first and "weights_only" not in msg else "")
    others = sorted(p.name for p in path.parent.glob("*.pt") if p != path) \
        if path.parent.name == "checkpoints" else []
    if _CHECKPOINT_NAME.fullmatch(path.name) and others:
        return (f"checkpoint {path} is damaged (truncated or corrupted; {detail}). Use an "
                f"earlier checkpoint of the same run ({', '.join(others[:4])}"
                f"{', ...' if len(others) > 4 else ''} in {path.parent}) or retrain")
    return (f"{path} is not a file this tool reads: not a diffeosense checkpoint, TorchScript "
            f"or torch.export archive, or state dict (torch cannot read it: {detail}); or it "
            f"is damaged")


def _load_state(model: nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:4]) or lines[0]
        raise ValueError(
            f"checkpoint {path} does not match the architecture of {what}: {detail}"
        ) from None


def load_checkpoint(
    path: str | Path, model: nn.Module | None = None, map_location: Any = "cpu"
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Load a checkpoint: returns ``(model, config, info)``.

    The model is rebuilt from the checkpoint's spec (registered name + kwargs) unless
    ``model`` is given, in which case the weights are loaded into it. ``info`` holds
    ``epoch``, ``metrics``, ``history``, ``best``, ``provenance``, ``model_spec`` and the
    ``optimizer_state``. Raises ValueError for a corrupted file, a file that is not a
    diffeosense checkpoint, or weights that do not fit the architecture.
    """
    path = Path(path)
    ckpt = _read_checkpoint(path, map_location)
    cfg = TrainConfig.from_dict(ckpt["config"])
    spec = ckpt["model_spec"]
    if model is None:
        try:
            # Pretrained weights are not fetched again: the checkpoint's state replaces them.
            kwargs = {k: v for k, v in spec["kwargs"].items() if k != "weights"}
            with torch.random.fork_rng(devices=[]):
                model = create_model(spec["name"], **kwargs)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"cannot rebuild the model of {path} ({e}); pass model= to load_checkpoint"
            ) from None
        what = f"{spec['name']}({spec['kwargs']})"
    else:
        what = f"the given {type(model).__name__}"
    _load_state(model, ckpt["model_state"], path, what)
    info = {k: v for k, v in ckpt.items() if k not in ("model_state", "config")}
    return model, cfg, info


def _serialize(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _with_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the fields added since it was written at their defaults
    (an older run resumes); the config as stored if it no longer parses."""
    try:
        return TrainConfig.from_dict(d).to_dict()
    except (ValueError, TypeError):
        return d


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k == "data":
            out += _config_diff(va, vb, prefix=f"{key}.")
        elif va != vb and key not in _RESUME_FREE_KEYS:
            out.append(f"{key}: {va!r} (checkpoint) vs {vb!r} (now)")
    return out


# ---------------------------------------------------------------------------------------------
# The loop.


def _as_dataset(train: Any, test: Any, cfg: TrainConfig) -> ImageDataset:
    if isinstance(train, ImageDataset):
        if test is not None:
            raise ValueError("pass either an ImageDataset or (x, y) tensors, not both")
        return train
    x, y = train
    xt, yt = test if test is not None else (None, None)
    return ImageDataset.from_tensors(x, y, xt, yt, name=cfg.data.name, config=cfg.data)


@dataclass
class _Run:
    """The state of one training run that the steps of :func:`fit` share."""

    model: nn.Module
    opt: torch.optim.Optimizer
    data: ImageDataset
    cfg: TrainConfig
    cfg_dict: dict[str, Any]
    spec: dict[str, Any]
    prov: dict[str, Any]
    device: torch.device
    out_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "error": None})
    lock: RunLock | None = None  # held on out_dir for the whole run
    start: int = 1  # the first epoch still to run
    stopped: str = "epochs"
    initial_loss: float | None = None  # loss of the first batch, on the initial weights
    compiled: nn.Module | None = None  # torch.compile(model) with TrainConfig.compile

    @property
    def forward(self) -> nn.Module:
        """What the training loop calls: the compiled model, or the model itself."""
        return self.compiled if self.compiled is not None else self.model

    @property
    def ckdir(self) -> Path | None:
        return self.out_dir / "checkpoints" if self.out_dir is not None else None

    @property
    def has_test(self) -> bool:
        return self.data.x_test is not None

    def payload(self, epoch: int) -> bytes:
        return _serialize(_payload(epoch, self.model, self.opt, self.cfg, self.cfg_dict,
                                   self.spec, self.history, self.best, self.prov))  # fmt: skip


class LossExplosionWarning(UserWarning):
    """The loss after the first epoch is far above the loss at initialization: the learning
    rate may be too high for this model and data. Training may still recover: VGG11-BN and
    ResNet18 on the 2D scale-detection task at the paper's lr 0.05 warn, then reach the
    lowest test errors (``docs/results/scale_detection_2d_quick_curves.csv``)."""


# An epoch-1 loss this many times the initial loss is an explosion, not noise: a healthy
# first epoch lowers the loss, and even BatchNorm nets evaluated with young running
# statistics stay within a few times ln(K).
_EXPLOSION_FACTOR = 10.0


def _diverged(run: _Run, epoch: int, what: str, value: float) -> ValueError:
    where = f" in {run.ckdir}" if run.ckdir is not None else ""
    return ValueError(
        f"training diverged at epoch {epoch} ({what} {value}); the last finite checkpoint "
        f"(epoch {epoch - 1}) is kept{where}. Lower the learning rate (--lr)."
    )


def _start_or_resume(run: _Run, resume: bool) -> None:
    """A new run writes config.json, init.pt and last.pt (epoch 0); ``resume`` restores the
    model, optimizer, history and best from last.pt. Refuses to overwrite an existing run."""
    if run.out_dir is None:
        return
    out_dir, ckdir = run.out_dir, run.ckdir
    # We hold the folder's lock: any temporary in it is the remains of a killed writer.
    clean_stale_temporaries(out_dir)
    last = ckdir / "last.pt"
    if last.exists() and not resume:
        raise ValueError(
            f"{out_dir} already holds a run ({last}); pass resume=True (--resume) to "
            f"continue it, or choose another output folder"
        )
    if last.exists():
        ckpt = _read_checkpoint(last, map_location=run.device)
        diff = _config_diff(_with_defaults(ckpt["config"]), run.cfg_dict)
        if diff:
            raise ValueError(
                f"cannot resume {out_dir}: the config differs from the checkpoint's: "
                + "; ".join(diff)
            )
        _load_state(run.model, ckpt["model_state"], last, f"the {run.cfg.model} being resumed")
        run.opt.load_state_dict(ckpt["optimizer_state"])
        run.history = list(ckpt["history"])
        run.best = dict(ckpt["best"])
        run.start = int(ckpt["epoch"]) + 1
    else:
        write_json(
            out_dir / "config.json",
            {"config": run.cfg_dict, "config_hash": config_hash(run.cfg_dict),
             "model_spec": run.spec, "provenance": run.prov},
        )  # fmt: skip
        blob = run.payload(0)
        write_bytes(ckdir / "init.pt", blob)
        write_bytes(ckdir / "last.pt", blob)
    _write_metrics(out_dir, run.history)
    if run.history and run.cfg.stop_at_zero_loss and run.history[-1].get("train_eval_loss") == 0.0:
        run.stopped, run.start = "zero_loss", run.cfg.epochs + 1


def _train_one_epoch(run: _Run, epoch: int, drop_last: bool, bar: Any) -> dict[str, Any]:
    """One pass of SGD over the shuffled training set; all its randomness from (seed, epoch).
    Stops at the first batch whose loss is not finite, before that step changes the weights
    (the fast path, ``precision="bf16"``: at the epoch's end, see :class:`TrainConfig`)."""
    cfg, model, opt, device = run.cfg, run.forward, run.opt, run.device
    fast = cfg.precision != "fp32"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if fast \
        else contextlib.nullcontext()
    lr = cfg.lr_at(epoch)
    for group in opt.param_groups:
        group["lr"] = lr
    g = torch.Generator().manual_seed(_derive_seed(cfg.seed, epoch, "train"))
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    err_sum = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    # Dropout and any other op on the global RNG: seeded per epoch, then restored.
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(_derive_seed(cfg.seed, epoch, "global"))
        batches = run.data.batches("train", cfg.batch_size, shuffle=True, generator=g,
                                   drop_last=drop_last)  # fmt: skip
        for i, (xb, yb) in enumerate(batches):
            if cfg.channels_last and xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast:
                out = model(xb)
            loss, errs = _loss_and_errors(out.float() if fast else out, yb, cfg.loss)
            if not fast and not bool(torch.isfinite(loss.detach())):
                raise _diverged(run, epoch, f"train loss of batch {i + 1}", loss.item())
            if run.initial_loss is None:
                run.initial_loss = loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double() * len(yb)
            err_sum += errs
            n += len(yb)
            bar.update(1)
    return {"epoch": epoch, "lr": lr, "train_loss": float(loss_sum) / n,
            "train_error": int(err_sum) / n}  # fmt: skip


def _evaluate_epoch(run: _Run, epoch: int, metrics: dict[str, Any]) -> None:
    """Add the test metrics and (with ``stop_at_zero_loss``) the full-pass training metrics;
    every noise draw from its own (seed, epoch, purpose) generator."""
    cfg = run.cfg
    if run.has_test:
        gt = torch.Generator().manual_seed(_derive_seed(cfg.seed, epoch, "test"))
        ev = evaluate(run.model, run.data, "test", cfg.loss, cfg.eval_batch_size, gt)
        metrics.update(test_loss=ev["loss"], test_error=ev["error"])
    if cfg.stop_at_zero_loss:
        # The running mean of the epoch mixes weights of different steps (and momentum or
        # decay may move them after a zero-loss batch): decide on a full pass.
        ge = torch.Generator().manual_seed(_derive_seed(cfg.seed, epoch, "train-eval"))
        ev = evaluate(run.model, run.data, "train", cfg.loss, cfg.eval_batch_size, ge)
        metrics.update(train_eval_loss=ev["loss"], train_eval_error=ev["error"])


def _check_losses(run: _Run, epoch: int, metrics: dict[str, Any]) -> None:
    """Refuse an epoch with a non-finite loss (nothing of it is saved); warn once when the
    first epoch's loss exploded above the initial loss."""
    for key in ("train_loss", "test_loss", "train_eval_loss"):
        if key in metrics and not math.isfinite(metrics[key]):
            raise _diverged(run, epoch, key.replace("_", " "), metrics[key])
    key = "test_loss" if run.has_test else "train_loss"
    if epoch == 1 and run.initial_loss is not None and run.initial_loss > 0:
        if metrics[key] > _EXPLOSION_FACTOR * run.initial_loss:
            warnings.warn(
                f"the loss exploded in the first epoch: {key.replace('_', ' ')} "
                f"{metrics[key]:.4g} after epoch 1 vs {run.initial_loss:.4g} at "
                f"initialization (lr {run.cfg.lr_value:g}); the learning rate may be too high "
                f"for {run.cfg.model} on this data: if the test error does not fall in the "
                f"next epochs, try a lower --lr (nets with BatchNorm often recover)",
                LossExplosionWarning, stacklevel=4,
            )  # fmt: skip


def _record_epoch(run: _Run, metrics: dict[str, Any]) -> bool:
    """Append the epoch to the history; returns whether it is the new best (lowest test
    error, training error without a test set)."""
    run.history.append(metrics)
    score = metrics["test_error"] if run.has_test else metrics["train_error"]
    improved = run.best["error"] is None or score < run.best["error"]
    if improved:
        run.best = {"epoch": metrics["epoch"], "error": score}
    return improved


def _checkpoint_epoch(run: _Run, epoch: int, improved: bool, done: bool) -> None:
    """epoch_XXXX.pt (every keep_every epochs and the last), best.pt, then last.pt, the
    commit point: a run killed before it resumes this epoch from scratch."""
    if run.ckdir is None:
        return
    run.lock.check()  # never re-create a vanished folder with half a run in it
    blob = run.payload(epoch)
    keep = run.cfg.keep_every > 0 and (epoch % run.cfg.keep_every == 0 or done)
    if keep:
        write_bytes(run.ckdir / f"epoch_{epoch:04d}.pt", blob)
    if improved:
        write_bytes(run.ckdir / "best.pt", blob)
    write_bytes(run.ckdir / "last.pt", blob)  # the commit point: written last
    _write_metrics(run.out_dir, run.history)


def _write_summary(run: _Run, result: TrainResult) -> None:
    if run.out_dir is None:
        return
    run.lock.check()
    write_json(
        run.out_dir / "summary.json",
        {"model": run.cfg.model, "data": run.cfg.data.name, "epochs_run": len(run.history),
         "stopped": run.stopped, "final": result.final,
         "best": {"epoch": run.best["epoch"], "error": run.best["error"]},
         "config_hash": config_hash(run.cfg_dict), "provenance": run.prov},
    )  # fmt: skip


def fit(
    model: nn.Module,
    train: ImageDataset | tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    cfg: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    model_spec: dict[str, Any] | None = None,
    tracker: Any = None,
) -> TrainResult:
    """Train ``model`` on ``train`` with the recipe of ``cfg``; checkpoint into ``out_dir``.

    Args:
        model: any ``nn.Module`` mapping a batch ``x: [B, ...]`` to ``[B, K]`` logits
            (cross-entropy) or ``[B]`` / ``[B, 1]`` scores (hinge).
        train: an :class:`ImageDataset` (then ``test`` must be None; its config's
            augmentation and noise apply), or a tuple ``(x [N, ...], y [N])`` of already
            normalized tensors (augmentation and noise from ``cfg.data``).
        test: ``(x, y)`` evaluated after every epoch, or None.
        cfg: the recipe (default ``TrainConfig()``). ``cfg.model``/``model_kwargs`` only
            label the run here unless ``model_spec`` is None and the name is registered.
        out_dir: run folder (see the module doc); None trains in memory, no files.
        resume: continue from ``out_dir/checkpoints/last.pt`` if it exists (start afresh if
            the run was killed before its first checkpoint). Without ``resume``, an
            ``out_dir`` that already holds a run is refused rather than overwritten.
        progress: tqdm progress bar on stderr.
        model_spec: ``{"name", "kwargs"}`` to rebuild the model in :func:`load_checkpoint`.
        tracker: a :class:`~diffeosense.tracking.SensitivityTracker`: D, G, R at scheduled
            epochs, measured after the checkpoint so the weights stay those of an untracked run.

    Returns a :class:`TrainResult` with the final model. The best checkpoint is the one with
    the lowest test error (training error when there is no test set).

    Raises ValueError at the first non-finite loss (the last finite checkpoint is kept) and
    warns (:class:`LossExplosionWarning`) when the first epoch's loss (test, else train) is
    more than 10 times the loss of the first batch on the initial weights.
    """
    cfg = cfg or TrainConfig()
    device = _resolve_device(cfg.device)
    data = _as_dataset(train, test, cfg).to(device)
    _check_labels(data, cfg.loss)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    spec = model_spec or {"name": cfg.model, "kwargs": dict(cfg.model_kwargs)}
    run = _Run(
        model=model, opt=_make_optimizer(model, cfg), data=data, cfg=cfg,
        cfg_dict=cfg.to_dict(), spec={**spec, "class": type(model).__name__},
        # Plain JSON values only (torch.__version__ is a str subclass): loadable with
        # weights_only.
        prov=json.loads(json.dumps(to_jsonable(provenance()), default=str)),
        device=device, out_dir=Path(out_dir) if out_dir is not None else None,
    )  # fmt: skip
    if cfg.compile:
        run.compiled = torch.compile(model)  # shares the parameters: checkpoints unchanged
    if tracker is not None and hasattr(tracker, "check"):
        tracker.check(model, data, cfg)  # a bad schedule or layer: before any file is made
    if run.out_dir is None:
        return _fit_steps(run, resume, progress, tracker)
    with run_lock(run.out_dir) as run.lock:
        return _fit_steps(run, resume, progress, tracker)


def _fit_steps(run: _Run, resume: bool, progress: bool, tracker: Any = None) -> TrainResult:
    """The steps of :func:`fit`, in order, on a locked (or no) run folder."""
    from tqdm.auto import tqdm

    cfg, data = run.cfg, run.data
    _start_or_resume(run, resume)
    if tracker is not None:  # measures the committed epoch (0 when fresh) if scheduled
        tracker.begin(run.model, data, cfg, run.out_dir, run.history)

    nb = data.num_batches("train", cfg.batch_size)
    # A last batch of a single image breaks BatchNorm in train mode: drop it in that case.
    drop_last = len(data.x_train) % cfg.batch_size == 1 and len(data.x_train) > 1
    bar = tqdm(
        total=cfg.epochs * nb, initial=(run.start - 1) * nb, disable=not progress,
        desc=f"train {cfg.model}", unit="batch", dynamic_ncols=True,
    )  # fmt: skip
    try:
        for epoch in range(run.start, cfg.epochs + 1):
            t0 = time.perf_counter()
            metrics = _train_one_epoch(run, epoch, drop_last, bar)
            _evaluate_epoch(run, epoch, metrics)
            _check_losses(run, epoch, metrics)
            metrics["time"] = time.perf_counter() - t0
            improved = _record_epoch(run, metrics)
            bar.set_postfix(
                loss=f"{metrics['train_loss']:.3g}", err=f"{metrics['train_error']:.3f}",
                **({"test_err": f"{metrics['test_error']:.3f}"} if run.has_test else {}),
            )  # fmt: skip
            done = epoch == cfg.epochs
            if cfg.stop_at_zero_loss and metrics["train_eval_loss"] == 0.0:
                run.stopped, done = "zero_loss", True
            _checkpoint_epoch(run, epoch, improved, done)
            # The epoch is complete and committed (last.pt): per-epoch observers go here.
            if tracker is not None:
                tracker.after_epoch(epoch, run.model, metrics, final=done)
            if done:
                break
    finally:
        bar.close()

    result = TrainResult(
        model=run.model, history=run.history, best_epoch=run.best["epoch"],
        best_error=run.best["error"], stopped=run.stopped, out_dir=run.out_dir,
    )  # fmt: skip
    _write_summary(run, result)
    return result


def _payload(
    epoch: int, model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig,
    cfg_dict: dict[str, Any], spec: dict[str, Any], history: list, best: dict, prov: dict,
) -> dict[str, Any]:  # fmt: skip
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model_state": model.state_dict(),
        "optimizer_state": opt.state_dict(),
        # The schedule is a pure function of the epoch (TrainConfig.lr_at): nothing to restore.
        "scheduler": {"name": cfg.schedule, "epoch": epoch, "lr": cfg.lr_at(max(epoch, 1))},
        # Per-epoch generators are derived from (seed, epoch): no RNG state to restore.
        "rng": {"seed": cfg.seed, "scheme": "sha256(seed/epoch/purpose)"},
        "metrics": history[-1] if history else None,
        "history": [dict(m) for m in history],
        "best": dict(best),
        "config": cfg_dict,
        "model_spec": to_jsonable(spec),
        "provenance": prov,
    }


def _write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    # Rewritten whole from the checkpointed history: a resumed run never duplicates a line.
    write_text(out_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


def train(
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    dataset: ImageDataset | None = None,
    tracker: Any = None,
) -> TrainResult:
    """Load ``cfg.data`` (or use ``dataset``), build ``cfg.model`` with a seeded init, and
    :func:`fit` it; see :func:`fit` for ``out_dir``, ``resume``, ``tracker`` and the files
    written."""
    data = dataset if dataset is not None else load_dataset(cfg.data)
    _check_labels(data, cfg.loss)  # before the model: no labels, no number of outputs
    model, spec = build_model(cfg, data)
    return fit(model, data, None, cfg, out_dir, resume=resume, progress=progress, model_spec=spec,
               tracker=tracker)
