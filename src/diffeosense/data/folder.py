"""Images in class subfolders (``folder:PATH``), read once into uint8 tensors.

Layouts (the same class folders as torchvision's ``ImageFolder``; classes are the sorted
subfolder names, labels their indices, files found with torchvision's own
``make_dataset``, so the order is ``ImageFolder``'s)::

    PATH/train/<class>/*.png   and   PATH/test/<class>/*.png   (or PATH/val/...): both splits
    PATH/<class>/*.png                                          : one folder of images

A single folder is split here: :data:`TEST_FRACTION` (20 %) of every class, at least one
image of a class of two or more, goes to the test split, chosen with the fixed seed
:data:`SPLIT_SEED` (the split never changes with a run's seeds, so test errors compare
across runs). Both splits are then shuffled with that seed (classes mixed: the first
``n_probes`` test images of a measurement are a sample of every class), as are the splits of
a ``train/``/``test/`` layout.

Decoding is PIL's. Colour: every image is converted to the mode of the majority, grayscale
(``L``: one channel) or colour (``RGB``: three; palette, RGBA, CMYK count as colour; a tie is
colour), with PIL's ``convert``. Sizes: images must all have one size unless ``resize``
(torchvision's ``Resize(N)``: the shorter side to N, aspect kept) and/or ``crop`` (its
``CenterCrop(N)``: the central N x N, zero-padded where the image is smaller) bring them
to one; otherwise a ``ValueError`` names two files, their sizes and the options.

>>> import tempfile
>>> from PIL import Image
>>> root = Path(tempfile.mkdtemp())
>>> for c in ("cat", "dog"):
...     (root / c).mkdir()
...     for i in range(5):
...         Image.new("L", (8, 6), color=40 * i).save(root / c / f"{i}.png")
>>> data = read_image_folder(root)
>>> data.classes, tuple(data.x_train.shape), tuple(data.x_test.shape)
(['cat', 'dog'], (8, 1, 6, 8), (2, 1, 6, 8))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["read_image_folder", "FolderImages", "TEST_FRACTION", "SPLIT_SEED"]

TEST_FRACTION = 0.2  # held out of a single folder, per class
SPLIT_SEED = 20220101  # fixed: a folder's held-out split and order never change
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_TEST_DIRS = ("test", "val")


@dataclass
class FolderImages:
    """What :func:`read_image_folder` returns.

    Attributes:
        x_train, x_test: uint8 ``[N, C, H, W]`` (``x_test`` None when no image was held out).
        y_train, y_test: int64 class indices ``[N]``.
        classes: the class names, in label order.
        files_train, files_test: the image file of every sample, in the same order.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: list[str]
    files_train: list[str]
    files_test: list[str] | None


def _split_dirs(root: Path) -> tuple[Path, Path | None]:
    """(train folder, test folder or None) of a ``folder:`` root."""
    if (root / "train").is_dir():
        test = next((root / d for d in _TEST_DIRS if (root / d).is_dir()), None)
        if test is not None:
            return root / "train", test
    return root, None


def _samples(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    present = {c: i for c, i in class_to_idx.items() if (folder / c).is_dir()}
    if not present:
        return []
    try:
        return make_dataset(str(folder), present, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{folder}: {e}") from None


def _probe(files: list[str]) -> list[tuple[tuple[int, int], str]]:
    """``((width, height), mode)`` of every file, from its header (no decoding)."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                out.append((im.size, im.mode))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read the image {f} ({type(e).__name__}: {e}); remove or "
                             f"replace it") from None
    return out


def _mode(infos: list[tuple[tuple[int, int], str]]) -> str:
    """``"L"`` if most images are grayscale, else ``"RGB"``."""
    gray = sum(mode in _GRAY_MODES for _, mode in infos)
    return "L" if gray > len(infos) - gray else "RGB"


def _size_error(a: str, sa: tuple[int, int], b: str, sb: tuple[int, int], after: str) -> str:
    n = min(*sa, *sb)
    return (f"images of different sizes{after}: {a} is {sa[0]}x{sa[1]} and {b} is "
            f"{sb[0]}x{sb[1]} (width x height); give --resize N and/or --crop N "
            f"(DataConfig(resize=N, crop=N)), e.g. --resize {n} --crop {n}, to bring every "
            f"image to N x N")


def _decode(files: list[str], mode: str, resize: int | None, crop: int | None
            ) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms import CenterCrop, Resize
    from torchvision.transforms.functional import pil_to_tensor

    ops = ([Resize(resize)] if resize else []) + ([CenterCrop(crop)] if crop else [])
    out, first = [], None
    for f in files:
        with Image.open(f) as im:
            img = im.convert(mode)
        for op in ops:
            img = op(img)
        t = pil_to_tensor(img)
        if first is None:
            first = (f, img.size)
        elif img.size != first[1]:
            raise ValueError(_size_error(first[0], first[1], f, img.size,
                                         f" after --resize {resize}"))
        out.append(t)
    return torch.stack(out)


def _hold_out(y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices: :data:`TEST_FRACTION` of every class (at least one of a
    class of two or more) to the test split."""
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = max(1, round(TEST_FRACTION * len(idx))) if len(idx) >= 2 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train), torch.cat(test)


def read_image_folder(path: str | Path, *, resize: int | None = None,
                      crop: int | None = None) -> FolderImages:
    """Read ``PATH`` (module docstring for the layouts, colour, sizes and the split):
    uint8 ``[N, C, H, W]`` images and int64 labels.

    Raises ``FileNotFoundError`` (no folder, no class folders, a class without images) and
    ``ValueError`` (an unreadable image, sizes that differ without ``resize``/``crop``, a
    test class unknown to the training split).
    """
    from torchvision.datasets.folder import find_classes

    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root} (folder:PATH names a folder of class "
                                f"subfolders of images)")
    train_dir, test_dir = _split_dirs(root)
    try:
        classes, class_to_idx = find_classes(str(train_dir))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{train_dir} holds no class folders; folder:PATH wants PATH/<class>/<image> (or "
            f"PATH/train/<class>/... and PATH/test/<class>/...)") from None
    train = _samples(train_dir, class_to_idx)
    test = None
    if test_dir is not None:
        extra = sorted(set(e.name for e in os.scandir(test_dir) if e.is_dir()) - set(classes))
        if extra:
            raise ValueError(f"{test_dir} has classes that {train_dir} lacks: {extra}; the "
                             f"splits must share their class folders")
        test = _samples(test_dir, class_to_idx)
    files = [f for f, _ in train] + [f for f, _ in test or []]
    infos = _probe(files)
    if resize is None and crop is None:
        sizes = [s for s, _ in infos]
        odd = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
        if odd is not None:
            raise ValueError(_size_error(files[0], sizes[0], files[odd], sizes[odd], ""))
    x = _decode(files, _mode(infos), resize, crop)
    y = torch.tensor([c for _, c in train] + [c for _, c in test or []], dtype=torch.int64)
    g = torch.Generator().manual_seed(SPLIT_SEED)
    n = len(train)
    if test is None:
        tr, te = _hold_out(y, g)
    else:
        tr, te = torch.arange(n), torch.arange(n, len(files))
    tr, te = tr[torch.randperm(len(tr), generator=g)], te[torch.randperm(len(te), generator=g)]
    has_test = len(te) > 0
    return FolderImages(
        x_train=x[tr], y_train=y[tr], x_test=x[te] if has_test else None,
        y_test=y[te] if has_test else None, classes=list(classes),
        files_train=[files[i] for i in tr.tolist()],
        files_test=[files[i] for i in te.tolist()] if has_test else None)
