"""The scale-detection task: two active pixels, labelled by a length scale xi.

The paper's model task (Tomasini et al. 2022, Figs. 7-9), where the only information is the
*distance* between two pixels, so a net must pool space up to the scale xi, and nothing finer.

Signals and labels
------------------
* 1D (``dim=1``): signals of length ``N = size`` with two active pixels at positions
  ``i < j`` (value ``amplitude``, all other entries 0). Shape ``x: [n, 1, N]``.

  - ``task="distance"`` (task 1): periodic distance ``d = min(|i - j|, N - |i - j|)``;
    ``y = +1`` if ``d < xi - gap/2``, ``y = -1`` if ``d >= xi + gap/2``; pairs in between
    (``xi - gap/2 <= d < xi + gap/2``) are discarded (label 0 in :func:`label_pairs`).
  - ``task="block"`` (task 2): ``y = +1`` if both pixels fall in the same block of length
    ``xi`` (blocks ``[0, xi), [xi, 2 xi), ...``; the last one shorter when xi does not divide
    N), else ``y = -1``. The gap is not used. This task is not translation invariant: a net
    with circular padding and global pooling can only solve it if its strides align with
    the blocks (e.g. stride ``s = F`` with ``xi = F^L``).
* 2D (``dim=2``): ``d x d`` images (``size = d``, default 28, ``xi = 14``, ``gap = 2``),
  Euclidean (non-periodic) distance between the pixel centres, same rule as task 1.
  Shape ``x: [n, 1, d, d]``.
* Default amplitude: ``n_pixels / 2`` (``N/2`` in 1D, ``d^2/2`` in 2D, the paper's 2D value),
  so that the mean pixel value is 1.

All unordered pairs of distinct positions are enumerated; the larger class is subsampled
(seeded) to the size of the smaller one; the split is stratified: ``train_size // 2`` pairs
of each class for training (``+1`` first when ``train_size`` is odd), and up to
``test_size // 2`` of each class among the rest for testing (``test_size=None``: all the rest).

Diffeomorphisms of the task (:class:`ActivePixelMove`)
------------------------------------------------------
Each active pixel moves one step: 1D ``+-1``, 2D one of the 4 neighbours, uniformly. At the
border a move is clipped (the pixel stays; ``boundary="periodic"`` wraps instead). A move that
would put both pixels on the same site is undone (the second pixel's move, or the first's when
the second did not move). The *label-preserving* variant moves the pixels one after the other
and undoes each move that would change the label (including a move into the gap).

>>> cfg = ScaleDetectionConfig(dim=1, size=16, xi=4, gap=2, train_size=20, seed=0)
>>> data = make_scale_detection(cfg)
>>> data.x_train.shape, data.y_train.unique().tolist(), data.pos_train.shape
(torch.Size([20, 1, 16]), [-1.0, 1.0], torch.Size([20, 2]))
>>> move = ActivePixelMove(cfg)
>>> params = move.sample(data.x_test, torch.Generator().manual_seed(0))
>>> moved = move.apply(data.x_test, params)
>>> bool((label_pairs(active_positions(moved), cfg) == data.y_test).all())
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .._validate import check_types
from ..perturbations import register_perturbation

__all__ = [
    "ScaleDetectionConfig",
    "ScaleDetectionData",
    "make_scale_detection",
    "label_pairs",
    "pair_distances",
    "pair_counts",
    "all_pairs",
    "render_pairs",
    "active_positions",
    "sample_moves",
    "MoveParams",
    "ActivePixelMove",
    "dataset_task",
    "is_task_dataset",
    "task_dataset_name",
]

_TASKS = ("distance", "block")
_BOUNDARIES = ("clip", "periodic")


@dataclass(frozen=True)
class ScaleDetectionConfig:
    """The scale-detection task.

    Args:
        dim: 1 (signals of length ``size``) or 2 (``size x size`` images).
        size: N in 1D, d in 2D.
        xi: the length scale (block length for ``task="block"``, an integer there).
        gap: width g of the band of distances ``[xi - g/2, xi + g/2)`` that is discarded.
        task: ``"distance"`` (task 1; the only one in 2D) or ``"block"`` (task 2, 1D).
        amplitude: value of the active pixels; ``None`` for ``n_pixels / 2``.
        train_size: P, number of training pairs (balanced).
        test_size: at most this many test pairs (balanced); ``None`` for all the rest.
        seed: seeds the class subsampling and the split.
    """

    dim: int = 1
    size: int = 64
    xi: float = 16
    gap: float = 2
    task: str = "distance"
    amplitude: float | None = None
    train_size: int = 1024
    test_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self, xi={"lo": 0, "lo_open": True}, gap={"lo": 0},
                    amplitude={"optional": True})  # fmt: skip
        if self.dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {self.dim}")
        if self.size < 2:
            raise ValueError(f"size must be at least 2, got {self.size}")
        if self.task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {self.task!r}")
        if self.task == "block":
            if self.dim != 1:
                raise ValueError("task='block' (task 2) is defined for dim=1 only")
            if self.xi != int(self.xi) or not 1 <= self.xi <= self.size:
                raise ValueError(f"task='block' needs an integer xi in [1, size], got {self.xi}")
        if self.xi <= 0 or self.gap < 0:
            raise ValueError(f"need xi > 0 and gap >= 0, got xi={self.xi}, gap={self.gap}")
        if self.train_size < 0 or (self.test_size is not None and self.test_size < 0):
            raise ValueError("train_size and test_size must be non-negative")

    @property
    def n_pixels(self) -> int:
        return self.size**self.dim

    @property
    def value(self) -> float:
        """The amplitude of the active pixels (default ``n_pixels / 2``)."""
        return float(self.n_pixels / 2 if self.amplitude is None else self.amplitude)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(1, N)`` or ``(1, d, d)``."""
        return (1,) + (self.size,) * self.dim

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScaleDetectionData:
    """Tensors of one split of the task.

    ``x_*: [n, 1, N]`` or ``[n, 1, d, d]`` (float32), ``y_*: [n]`` in ``{-1., +1.}``,
    ``pos_*: [n, 2]`` flat indices ``i < j`` of the active pixels (``row * d + col`` in 2D).
    """

    config: ScaleDetectionConfig
    x_train: Tensor
    y_train: Tensor
    pos_train: Tensor
    x_test: Tensor
    y_test: Tensor
    pos_test: Tensor


def all_pairs(config: ScaleDetectionConfig) -> Tensor:
    """All unordered pairs of distinct sites, ``[n_pixels (n_pixels - 1) / 2, 2]`` (i < j)."""
    return torch.combinations(torch.arange(config.n_pixels), r=2)


def pair_distances(pos: Tensor, config: ScaleDetectionConfig) -> Tensor:
    """Distance of each pair ``pos: [n, 2]`` (flat indices) -> ``[n]`` float64.

    1D: periodic ``min(|i - j|, N - |i - j|)``; 2D: Euclidean between ``(row, col)`` sites.
    """
    pos = pos.long()
    if config.dim == 1:
        diff = (pos[:, 0] - pos[:, 1]).abs()
        return torch.minimum(diff, config.size - diff).double()
    r, c = pos // config.size, pos % config.size
    return torch.hypot((r[:, 0] - r[:, 1]).double(), (c[:, 0] - c[:, 1]).double())


def label_pairs(pos: Tensor, config: ScaleDetectionConfig) -> Tensor:
    """Labels of pairs ``pos: [n, 2]`` -> ``[n]`` float in ``{-1, 0, +1}`` (0: in the gap).

    distance: ``+1`` if ``d < xi - gap/2``, ``-1`` if ``d >= xi + gap/2``, else 0.
    block: ``+1`` if ``i // xi == j // xi``, else ``-1``.
    """
    pos = pos.long()
    if config.task == "block":
        xi = int(config.xi)
        same = (pos[:, 0] // xi) == (pos[:, 1] // xi)
        return torch.where(same, 1.0, -1.0)
    d = pair_distances(pos, config)
    lo, hi = config.xi - config.gap / 2, config.xi + config.gap / 2
    y = torch.zeros(len(pos))
    y[d < lo] = 1.0
    y[d >= hi] = -1.0
    return y


def pair_counts(config: ScaleDetectionConfig) -> dict[str, int]:
    """Counts of pairs in each class before balancing: ``{"pos", "neg", "gap"}``."""
    y = label_pairs(all_pairs(config), config)
    return {k: int((y == v).sum()) for k, v in (("pos", 1.0), ("neg", -1.0), ("gap", 0.0))}


def render_pairs(pos: Tensor, config: ScaleDetectionConfig, values: Tensor | None = None) -> Tensor:
    """Signals with active pixels at ``pos: [n, 2]`` -> ``[n, 1, N]`` or ``[n, 1, d, d]``.

    ``values: [n, 2]`` (default: ``config.value`` everywhere); pixels must be distinct.
    """
    n = len(pos)
    flat = torch.zeros(n, config.n_pixels, dtype=torch.float32 if values is None else values.dtype)
    if values is None:
        values = torch.full((n, 2), config.value, dtype=flat.dtype)
    flat.scatter_(1, pos.long(), values)
    return flat.reshape(n, *config.shape)


def make_scale_detection(config: ScaleDetectionConfig) -> ScaleDetectionData:
    """Enumerate, label, balance and split all pairs (see the module docstring)."""
    g = torch.Generator().manual_seed(config.seed)
    pairs = all_pairs(config)
    y = label_pairs(pairs, config)
    pos_idx = torch.nonzero(y == 1).flatten()
    neg_idx = torch.nonzero(y == -1).flatten()
    m = min(len(pos_idx), len(neg_idx))
    # Balanced subsampling of the larger class, then a stratified split.
    pos_idx = pos_idx[torch.randperm(len(pos_idx), generator=g)[:m]]
    neg_idx = neg_idx[torch.randperm(len(neg_idx), generator=g)[:m]]
    n_tr_pos, n_tr_neg = (config.train_size + 1) // 2, config.train_size // 2
    if n_tr_pos > m:
        raise ValueError(
            f"train_size={config.train_size} is too large: this task has only {2 * m} balanced "
            f"pairs ({m} per class); lower train_size or enlarge size."
        )
    n_te = m - n_tr_pos if config.test_size is None else min(m - n_tr_pos, config.test_size // 2)
    train = torch.cat([pos_idx[:n_tr_pos], neg_idx[:n_tr_neg]])
    test = torch.cat([pos_idx[n_tr_pos:n_tr_pos + n_te], neg_idx[n_tr_pos:n_tr_pos + n_te]])
    train = train[torch.randperm(len(train), generator=g)]
    test = test[torch.randperm(len(test), generator=g)]
    p_tr, p_te = pairs[train], pairs[test]
    return ScaleDetectionData(
        config=config,
        x_train=render_pairs(p_tr, config), y_train=y[train], pos_train=p_tr,
        x_test=render_pairs(p_te, config), y_test=y[test], pos_test=p_te,
    )


def active_positions(x: Tensor) -> Tensor:
    """Flat indices of the two nonzero entries of each sample: ``x: [B, 1, ...] -> [B, 2]``.

    Raises ValueError unless every sample has exactly one channel and exactly two nonzero
    entries (the scale-detection format).
    """
    if x.ndim < 3 or x.shape[1] != 1:
        raise ValueError(
            f"scale-detection inputs are [B, 1, N] or [B, 1, d, d], got shape {tuple(x.shape)}"
        )
    flat = x.reshape(x.shape[0], -1) != 0
    counts = flat.sum(1)
    if not bool((counts == 2).all()):
        bad = int(torch.nonzero(counts != 2)[0])
        raise ValueError(
            f"sample {bad} has {int(counts[bad])} nonzero entries; the active-pixel move needs "
            "exactly two per sample (scale-detection signals, unperturbed)."
        )
    # Each row has exactly two True entries, so topk on the bool row returns both indices.
    idx = flat.to(torch.int8).topk(2, dim=1).indices
    return idx.sort(dim=1).values


@dataclass(frozen=True)
class MoveParams:
    """Parameters of one move batch: ``old``, ``new``: ``[B, 2]`` flat indices of the pixels."""

    old: Tensor
    new: Tensor


def _step(pos: Tensor, direction: Tensor, config: ScaleDetectionConfig, boundary: str) -> Tensor:
    """Move flat sites ``pos: [B]`` one step in ``direction: [B]`` (1D: 0 -> -1, 1 -> +1;
    2D: 0 up, 1 down, 2 left, 3 right); clipped or periodic at the border."""
    n = config.size
    if config.dim == 1:
        new = pos + 2 * direction - 1
        return new % n if boundary == "periodic" else new.clamp(0, n - 1)
    r, c = pos // n, pos % n
    dr = torch.tensor([-1, 1, 0, 0])[direction]
    dc = torch.tensor([0, 0, -1, 1])[direction]
    r, c = r + dr, c + dc
    if boundary == "periodic":
        r, c = r % n, c % n
    else:
        r, c = r.clamp(0, n - 1), c.clamp(0, n - 1)
    return r * n + c


def sample_moves(
    pos: Tensor,
    config: ScaleDetectionConfig,
    generator: torch.Generator | None = None,
    *,
    label_preserving: bool = True,
    boundary: str = "clip",
) -> Tensor:
    """New positions ``[B, 2]`` after one random step of each pixel of ``pos: [B, 2]``.

    Pixel 0 moves first, then pixel 1 (given pixel 0's final site). A step is undone when it
    lands on the other pixel or, with ``label_preserving``, when it changes the label of the
    pair (:func:`label_pairs`, gap included).
    """
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    pos = pos.long()
    n_dir = 2 if config.dim == 1 else 4
    direction = torch.randint(n_dir, pos.shape, generator=generator)
    y0 = label_pairs(pos, config)
    new = pos.clone()
    for p in (0, 1):
        cand = new.clone()
        cand[:, p] = _step(new[:, p], direction[:, p], config, boundary)
        ok = cand[:, 0] != cand[:, 1]
        if label_preserving:
            ok &= label_pairs(cand, config) == y0
        new = torch.where(ok[:, None], cand, new)
    return new


class ActivePixelMove:
    """The task's diffeomorphism as a sensitivity-engine perturbation (sample, then apply).

    ``sample(x [B, 1, ...], generator) -> MoveParams``: finds the two active pixels of each
    sample from ``x`` itself (exactly two nonzero entries required) and draws their moves
    (:func:`sample_moves`). ``apply(x, params)``: moves the pixels, keeping their values;
    replays exactly (``x`` must have its active pixels at ``params.old``).

    Args:
        config: the task (dim, size, xi, gap, task) used by the label-preserving variant.
        label_preserving: undo steps that change the label (the paper's 1D diffeo).
        boundary: ``"clip"`` (default) or ``"periodic"``.
    """

    def __init__(
        self,
        config: ScaleDetectionConfig,
        *,
        label_preserving: bool = True,
        boundary: str = "clip",
    ) -> None:
        if boundary not in _BOUNDARIES:
            raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
        self.config = config
        self.label_preserving = label_preserving
        self.boundary = boundary
        self.name = "pixel-move" + ("-preserving" if label_preserving else "")

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> MoveParams:
        if tuple(x.shape[1:]) != self.config.shape:
            raise ValueError(
                f"inputs of shape {tuple(x.shape)} do not match the task's sample shape "
                f"{self.config.shape}"
            )
        old = active_positions(x).cpu()
        new = sample_moves(
            old, self.config, generator,
            label_preserving=self.label_preserving, boundary=self.boundary,
        )
        return MoveParams(old=old, new=new)

    def apply(self, x: Tensor, params: MoveParams) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        old, new = params.old.to(x.device), params.new.to(x.device)
        if old.shape != (x.shape[0], 2) or not bool((flat.gather(1, old) != 0).all()):
            raise ValueError(
                "these move params were sampled for another batch: the active pixels of x are "
                "not at params.old"
            )
        values = flat.gather(1, old)
        out = flat.clone()
        out.scatter_(1, old, torch.zeros_like(values))
        out.scatter_(1, new, values)
        return out.reshape(x.shape)

    def config_dict(self) -> dict:
        return {"name": self.name, "boundary": self.boundary, **self.config.to_dict()}

    def __repr__(self) -> str:
        return (
            f"ActivePixelMove(label_preserving={self.label_preserving}, "
            f"boundary={self.boundary!r}, config={self.config})"
        )


@register_perturbation("pixel-move")
def _pixel_move_factory(
    dim: int = 1, size: int = 64, xi: float = 16, gap: float = 2, task: str = "distance",
    label_preserving: bool = True, boundary: str = "clip",
) -> ActivePixelMove:
    """``as_perturbation("pixel-move:dim=1,size=64,xi=16,gap=2,task=distance")``."""
    cfg = ScaleDetectionConfig(dim=dim, size=size, xi=xi, gap=gap, task=task)
    return ActivePixelMove(cfg, label_preserving=label_preserving, boundary=boundary)



# ---------------------------------------------------------------------------------- datasets
_DATASET_DEFAULTS = {
    "scale-detection-1d": {"dim": 1, "size": 64, "xi": 16.0, "gap": 2.0},
    # The paper's 2D task (science.md §4): d = 28, xi = 14, g = 2, pixel value d^2 / 2.
    "scale-detection-2d": {"dim": 2, "size": 28, "xi": 14.0, "gap": 2.0},
}
_DATASET_KEYS = ("size", "xi", "gap", "task", "amplitude", "test_size")


def dataset_task(name: str, P: int | None = None, seed: int = 0) -> ScaleDetectionConfig:
    """The task of a dataset spec ``"scale-detection-2d"`` or
    ``"scale-detection-2d:size=28,xi=14,gap=2,amplitude=392,test_size=4096"``.

    ``P`` is the number of training pairs (default 1024, the paper's), ``test_size`` defaults to
    ``4 P`` (the paper's 2D recipe), ``seed`` seeds the balancing and the split.

    >>> dataset_task("scale-detection-2d:xi=10", P=64).test_size
    256
    """
    base, _, opts = name.lower().partition(":")
    if base not in _DATASET_DEFAULTS:
        raise ValueError(f"unknown scale-detection dataset {base!r}; use one of "
                         f"{sorted(_DATASET_DEFAULTS)}")
    kw: dict = dict(_DATASET_DEFAULTS[base])
    for item in filter(None, (a.strip() for a in opts.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in _DATASET_KEYS:
            raise ValueError(f"bad option {item!r} in dataset {name!r}; options are "
                             f"{', '.join(_DATASET_KEYS)} as key=value")
        value = value.strip()
        if key == "task":
            kw[key] = value
        elif value.lower() == "none":
            kw[key] = None
        else:
            try:
                kw[key] = float(value) if key in ("xi", "gap", "amplitude") else int(value)
            except ValueError:
                raise ValueError(f"option {key} of dataset {name!r} must be a number, got "
                                 f"{value!r}") from None
    P = 1024 if P is None else int(P)
    kw.setdefault("test_size", 4 * P)
    return ScaleDetectionConfig(train_size=P, seed=seed, **kw)


def task_dataset_name(config: ScaleDetectionConfig) -> str:
    """The dataset spec that names the task ``config`` exactly: the inverse of
    :func:`dataset_task`, ``dataset_task(task_dataset_name(c), c.train_size, c.seed) == c``.

    Every option is written (``none`` for the default amplitude and for ``test_size=None``,
    all the rest), so the spec does not depend on the dataset's defaults. It is what a
    :class:`~diffeosense.data.DataConfig` of a run on this task holds (with ``P =
    train_size``, ``seed``), so its checkpoints name their task.

    >>> c = ScaleDetectionConfig(dim=1, size=64, xi=8, gap=2, train_size=512)
    >>> task_dataset_name(c)
    'scale-detection-1d:size=64,xi=8.0,gap=2.0,task=distance,amplitude=none,test_size=none'
    >>> dataset_task(task_dataset_name(c), P=512, seed=0) == c
    True
    """
    amp = "none" if config.amplitude is None else repr(float(config.amplitude))
    test = "none" if config.test_size is None else str(int(config.test_size))
    return (f"scale-detection-{config.dim}d:size={config.size},xi={float(config.xi)!r},"
            f"gap={float(config.gap)!r},task={config.task},amplitude={amp},test_size={test}")


def is_task_dataset(name: str) -> bool:
    """Whether a dataset spec names the scale-detection task (``scale-detection-1d`` or
    ``-2d``, with or without options): it is measured on class-balanced probes with its own
    pixel move (:mod:`diffeosense.probes`).

    >>> is_task_dataset("scale-detection-2d:xi=10"), is_task_dataset("mnist-embedded")
    (True, False)
    """
    return name.lower().partition(":")[0] in ("scale-detection-1d", "scale-detection-2d")
