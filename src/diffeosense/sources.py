"""What a measurement is run on: the model (a checkpoint, or a registered model at a seeded
initialization), the dataset and its probes, and the device; one resolution for every command.

Three steps, each returning a small record:

* :func:`resolve_model` -> :class:`ModelSource`: a checkpoint is loaded at once (its config
  names the dataset it was trained on); a registered model is built later, by
  :meth:`ModelSource.build`, when the data fixes its input channels and classes;
* :func:`resolve_data` -> :class:`DataSource`: the dataset (default: the checkpoint's own, with
  its split, else ``mnist-embedded``), its probes (:func:`diffeosense.probes.select_probes`,
  class-balanced on a scale-detection task) and default perturbation
  (:func:`diffeosense.probes.default_perturbation`);
* :func:`resolve_device`: ``"cuda"`` if available, else ``"cpu"``, unless named.

:func:`check_fits` gives one clear error when a net cannot take the samples (a 1D net given
images, a wrong length), before any measurement.

>>> src = resolve_model(model="simplecnn", model_seed=0)
>>> data = resolve_data(None, src, n_probes=8)
>>> data.name, tuple(data.probes.shape), data.perturbation
('mnist-embedded', (8, 1, 28, 28), 'diffeo')
>>> net = src.build(data); check_fits(net, src.name, data.probes, data.name, "")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ModelSource", "DataSource", "resolve_model", "resolve_data", "resolve_device",
           "check_fits", "DEFAULT_DATA"]

DEFAULT_DATA = "mnist-embedded"


@dataclass
class ModelSource:
    """A model to measure: ``name`` (its model spec, or the file it was loaded from), and
    either a loaded network (``model``: a checkpoint's, with ``train_config`` and ``info``,
    or a TorchScript / ``torch.export`` / pickled file's) or what builds one (``model_seed``,
    ``model_kwargs``, ``weights``)."""

    name: str
    checkpoint: Path | None = None
    model: nn.Module | None = None
    train_config: Any = None  # diffeosense.train.TrainConfig of a checkpoint
    info: dict[str, Any] = field(default_factory=dict)
    model_seed: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """The entries a result's sidecar records about the model."""
        if self.checkpoint is not None:
            out = {"model": self.name, "checkpoint": str(self.checkpoint)}
            if self.train_config is not None:
                out["epoch"] = self.info.get("epoch")
                out["model_kwargs"] = dict(self.train_config.model_kwargs)
            else:
                out["model_file"] = self.info.get("kind")
            return out
        out = {"model": self.name, "model_seed": self.model_seed}
        if self.model_kwargs:
            out["model_kwargs"] = dict(self.model_kwargs)
        if self.weights is not None:
            out["weights"] = str(self.weights)
        return out

    def build(self, data: DataSource) -> nn.Module:
        """The loaded net, or the model spec built for ``data``'s samples and classes with
        ``model_kwargs`` (initialized from ``model_seed`` through a local generator state: the
        global RNG is untouched), then ``weights`` loaded into it."""
        if self.model is not None:
            return self.model
        from .models import create_model, load_weights
        from .models.specs import size_option

        # A dataset without labels (num_classes 0): the model's default outputs. The image
        # size as train gives it (fc2, lenet on other than 28 px).
        k = {"num_classes": data.dataset.num_classes} if data.dataset.num_classes else {}
        k.update(size_option(self.name, tuple(data.probes.shape[1:]), self.model_kwargs))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.model_seed or 0)
            net = create_model(self.name, in_channels=data.probes.shape[1],
                               **{**k, **self.model_kwargs})
        if self.weights is not None:
            load_weights(net, self.weights, self.name)
        return net


def resolve_model(*, checkpoint: str | Path | None = None, model: str | None = None,
                  model_seed: int = 0, model_kwargs: dict[str, Any] | None = None,
                  weights: str | Path | None = None,
                  allow_pickle: bool = False) -> ModelSource:
    """What to measure: a model file (``checkpoint``) or a model spec (``model``, built by
    :meth:`ModelSource.build`). Exactly one of the two.

    Args:
        checkpoint: a checkpoint written by ``diffeosense train`` (rebuilt from its spec),
            a TorchScript or ``torch.export`` archive, or (``allow_pickle``) a pickled
            ``nn.Module`` (see :mod:`diffeosense.models.files`); loaded on the CPU.
        model: a model spec (:mod:`diffeosense.models.specs`): a registered name,
            ``torchvision:NAME``, ``timm:NAME``, ``FILE.py:FACTORY``, ``package.module:F``.
        model_seed, model_kwargs: its initialization seed and options.
        weights: a state dict file loaded into ``model`` (strictly).
    """
    if (checkpoint is None) == (model is None):
        raise ValueError("give a checkpoint or a model name (one of the two)")
    if checkpoint is None:
        from .models import spec_kind

        spec_kind(model)  # a malformed spec fails here, before any data is read
        path = None if weights is None else Path(weights)
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"no weights file {path}")
        return ModelSource(name=model, model_seed=model_seed,
                           model_kwargs=dict(model_kwargs or {}), weights=path)
    if model_kwargs or weights is not None:
        raise ValueError("--model-kw and --weights go with --model (a checkpoint holds its "
                         "architecture and weights)")
    from .models.files import file_kind, load_model_file
    from .train import load_checkpoint

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}")
    kind = file_kind(path)
    if kind in ("torchscript", "export", "pickle", "state_dict"):
        net = load_model_file(path, allow_pickle=allow_pickle)
        return ModelSource(name=str(path), checkpoint=path, model=net, info={"kind": kind})
    net, tcfg, info = load_checkpoint(path)
    return ModelSource(name=tcfg.model, checkpoint=path, model=net, train_config=tcfg,
                       info=info)


@dataclass
class DataSource:
    """A dataset and the probes measured on it.

    Attributes:
        name: the dataset spec (e.g. ``"scale-detection-1d:xi=8"``).
        config: the :class:`~diffeosense.data.DataConfig` it was loaded with.
        dataset: the loaded :class:`~diffeosense.data.ImageDataset`.
        probes: ``[M, *sample_shape]``, the first ``n_probes`` of the test split (the train
            split when there is none), class-balanced on a scale-detection task.
        split: ``"test"`` or ``"train"``.
        order: ``"split"`` or ``"balanced"``.
        perturbation: the dataset's default perturbation spec.
    """

    name: str
    config: Any
    dataset: Any
    probes: Tensor
    split: str
    order: str
    perturbation: str

    @property
    def meta(self) -> dict[str, Any]:
        """The entries a result's sidecar records about the data (its task on a
        scale-detection dataset)."""
        out: dict[str, Any] = {"data": self.name}
        if self.order == "balanced":
            from .data.scale_detection import dataset_task

            out["probes"] = f"{self.split} split, balanced across the classes"
            out["task"] = dataset_task(self.name, self.config.P, self.config.seed).to_dict()
        return out


def _same_dataset(a: str, b: str) -> bool:
    """Whether two specs name the same dataset, perhaps with other options
    (``scale-detection-1d:xi=8`` and ``scale-detection-1d``)."""
    from .data import parse_data_spec

    sa, sb = parse_data_spec(a), parse_data_spec(b)
    return (sa.kind, sa.target) == (sb.kind, sb.target)


def resolve_data(name: str | None, model: ModelSource | None = None, *,
                 root: str | None = None, download: bool = True, n_probes: int | None = None,
                 keep_split: bool = True, options: dict[str, Any] | None = None
                 ) -> DataSource:
    """The dataset ``name`` and its probes.

    Args:
        name: a dataset spec (:mod:`diffeosense.data.specs`); None: the checkpoint's own
            dataset and split (P, seed: a generated task's test split; its resize, crop and
            normalization), else ``mnist-embedded``.
        model: the :class:`ModelSource` (its checkpoint's dataset is the default).
        root, download: where the torchvision datasets are, and whether to fetch a missing one
            (``root=None``: the dataset config's).
        n_probes: probes kept (``None``: all of the split; balanced: twice the smaller class).
        keep_split: with a checkpoint and ``name`` naming its dataset with other options, keep
            the checkpoint's P and data seed (they fix a scale-detection task's split).
        options: :class:`~diffeosense.data.DataConfig` fields set explicitly (``resize``,
            ``crop``, ``normalize``; None values are not set): they replace the dataset's.
    """
    from .data import DataConfig, load_dataset
    from .probes import default_perturbation, probe_order_for, select_probes

    own = model.train_config.data if model is not None and model.train_config else None
    if name is None:
        cfg = own if own is not None else DataConfig(name=DEFAULT_DATA)
    elif own is not None and keep_split and _same_dataset(name, own.name):
        cfg = dataclasses.replace(own, name=name)
    else:
        cfg = DataConfig(name=name)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    cfg = dataclasses.replace(cfg, root=root or cfg.root, download=download, **given)
    ds = load_dataset(cfg)
    order = probe_order_for(cfg.name)
    probes = select_probes(ds, n_probes, order=order)
    return DataSource(name=cfg.name, config=cfg, dataset=ds, probes=probes,
                      split="test" if ds.x_test is not None else "train", order=order,
                      perturbation=default_perturbation(cfg.name))


def resolve_device(device: str | None = None) -> str:
    """``device`` as given, else ``"cuda"`` if available, else ``"cpu"``; a device this
    machine lacks (``cuda`` without a GPU) is one ValueError saying so
    (:func:`diffeosense._validate.available_device`)."""
    from ._validate import available_device

    dev = available_device(device)
    return device if device not in (None, "auto") else str(dev)


def check_fits(model: nn.Module, name: str, x: Tensor, data_name: str, hint: str) -> None:
    """A clear ``ValueError`` when ``model`` cannot take the samples ``x: [M, C, *spatial]``
    (a 1D net given images, a 2D net given signals, a wrong length): one forward pass of two
    probes (eval mode, no grad, RNG untouched), the model's mode restored. ``hint`` ends the
    message (what to do instead)."""
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    dims = {m.weight.dim() - 2 for m in model.modules() if isinstance(m, convs)}
    shape = list(x.shape[1:])
    if len(dims) == 1 and dims != {x.dim() - 2}:
        (d,) = dims
        want = {1: "signals [C, L]", 2: "images [C, H, W]"}.get(d, f"{d}D inputs")
        raise ValueError(f"{name} is a {d}D network: it takes {want}, but dataset "
                         f"{data_name!r} holds samples of shape {shape}; {hint}")
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()(x[:2])
    except (RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{name} cannot take the samples of dataset {data_name!r} (shape "
                         f"{shape}): {first}; {hint}") from None
    finally:
        model.train(was_training)

