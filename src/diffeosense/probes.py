"""Which inputs a measurement probes, and with which perturbation: the one place for both.

Every command and experiment that measures a dataset (``measure``, ``pooling``, sweep runs,
the scale-detection experiments) picks its probes and its default perturbation here, so the
conventions cannot drift apart:

* **Probes** (:func:`select_probes`): ``n`` inputs of a split (the test split when the
  dataset has one), in one of two orders:

  - ``"split"``: the first ``n`` in the split's order (the loaders shuffle their splits with
    a fixed seed, so a prefix is a uniform sample);
  - ``"balanced"``: taken alternately from the two classes of a task labelled +-1
    (:func:`balanced_probes`), so any prefix is balanced; the scale-detection experiments'
    probes (the authors probe a balanced tenth of all pairs, science.md §1b);
  - ``"auto"``: ``"balanced"`` on a scale-detection task, ``"split"`` otherwise.

* **Perturbation** (:func:`default_perturbation`): the paper's diffeomorphism (``"diffeo"``:
  1 px typical displacement, cut 3) for images and signals; on a scale-detection task its own
  diffeomorphism, the label-preserving move of each active pixel (:func:`task_perturbation`,
  ``"pixel-move:..."``; :class:`~diffeosense.data.scale_detection.ActivePixelMove`).

>>> import torch
>>> from diffeosense.data import ImageDataset
>>> ds = ImageDataset.from_tensors(torch.arange(6.0)[:, None, None],
...                                torch.tensor([1., 1., -1., 1., -1., -1.]), name="task")
>>> select_probes(ds, 4, order="balanced").flatten().tolist()
[0.0, 2.0, 1.0, 4.0]
>>> default_perturbation("mnist-embedded"), default_perturbation("scale-detection-1d")
('diffeo', 'pixel-move:dim=1,size=64,xi=16.0,gap=2.0,task=distance')
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data.scale_detection import dataset_task, is_task_dataset

__all__ = ["PROBE_ORDERS", "balanced_probes", "select_probes", "task_perturbation",
           "default_perturbation", "probe_order_for"]

PROBE_ORDERS = ("split", "balanced", "auto")


def balanced_probes(x: Tensor, y: Tensor, n: int | None) -> Tensor:
    """The first ``n`` inputs of ``x: [M, ...]`` taken alternately from the classes
    ``y = +1`` and ``y = -1`` (in their order in the split), ``-> [min(n, 2 m), ...]`` with
    ``m`` the smaller class count; ``n=None``: ``2 m`` (all of the smaller class).

    Any prefix is balanced across the two classes.

    >>> balanced_probes(torch.arange(6.0), torch.tensor([1., 1., -1., 1., -1., -1.]), 4)
    tensor([0., 2., 1., 4.])
    """
    pos = torch.nonzero(y > 0).flatten()
    neg = torch.nonzero(y < 0).flatten()
    m = min(len(pos), len(neg))
    order = torch.stack([pos[:m], neg[:m]], dim=1).flatten()
    return x[order if n is None else order[:n]]


def probe_order_for(data_name: str, order: str = "auto") -> str:
    """``order`` resolved: ``"auto"`` -> ``"balanced"`` on a scale-detection task, else
    ``"split"``; ``"split"`` and ``"balanced"`` are returned as given."""
    if order not in PROBE_ORDERS:
        raise ValueError(f"probe order must be one of {PROBE_ORDERS}, got {order!r}")
    if order == "auto":
        return "balanced" if is_task_dataset(data_name) else "split"
    return order


def select_probes(data, n: int | None, *, split: str = "test", order: str = "auto") -> Tensor:
    """``n`` probe inputs of ``data`` (an :class:`~diffeosense.data.ImageDataset`):
    ``[min(n, available), *sample_shape]``, clean (``measure`` corrupts them itself when asked).

    Args:
        n: number of probes; ``None``: all of the split (``"balanced"``: twice the smaller
            class).
        split: ``"test"`` (the train split when the dataset has no test split) or ``"train"``.
        order: ``"split"``, ``"balanced"`` or ``"auto"`` (module docstring).
    """
    if split not in ("test", "train"):
        raise ValueError(f"probe split must be 'test' or 'train', got {split!r}")
    test = split == "test" and data.x_test is not None
    x, y = (data.x_test, data.y_test) if test else (data.x_train, data.y_train)
    if probe_order_for(data.name, order) == "split":
        return x if n is None else x[:n]
    labels = torch.unique(y).tolist()
    if y.dim() != 1 or not set(labels) <= {-1.0, 1.0} or len(labels) != 2:
        raise ValueError(f"balanced probes alternate the two classes of a task labelled +-1 "
                         f"(scale detection); {data.name} has labels {labels[:10]}: use the "
                         f"'split' probe order")
    return balanced_probes(x, y, n)


def task_perturbation(data_name: str) -> str:
    """The perturbation spec of a scale-detection dataset: its label-preserving pixel move
    (``"pixel-move:dim=2,size=28,xi=14.0,gap=2.0,task=distance"``)."""
    t = dataset_task(data_name)
    return f"pixel-move:dim={t.dim},size={t.size},xi={t.xi},gap={t.gap},task={t.task}"


def default_perturbation(data_name: str) -> str:
    """What a dataset is measured with unless told otherwise: the task's pixel move on a
    scale-detection dataset (:func:`task_perturbation`), else ``"diffeo"`` (the paper's)."""
    return task_perturbation(data_name) if is_task_dataset(data_name) else "diffeo"
