"""MNIST-format idx files, read directly (gzipped or not): no torchvision, no extraction.

An idx file (LeCun's MNIST format) is a big-endian header, ``0 0 TYPE NDIM`` then ``NDIM``
32-bit sizes, followed by the values in C order. MNIST and Fashion-MNIST ship as four of them::

    train-images-idx3-ubyte[.gz]   uint8 [60000, 28, 28]
    train-labels-idx1-ubyte[.gz]   uint8 [60000]
    t10k-images-idx3-ubyte[.gz]    uint8 [10000, 28, 28]
    t10k-labels-idx1-ubyte[.gz]    uint8 [10000]

(``train-images.idx3-ubyte``, with a dot, as some mirrors name them, is found too.) A folder
holding them is the data source ``idx:PATH``; the ``mnist`` and ``fashion-mnist`` datasets
read the same files (:func:`find_idx_folder`).

>>> import gzip, tempfile
>>> d = Path(tempfile.mkdtemp())
>>> a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
>>> _ = write_idx(d / "train-images-idx3-ubyte.gz", a)
>>> np.array_equal(read_idx(d / "train-images-idx3-ubyte.gz"), a)
True
>>> idx_files(d)["train_images"].name, idx_files(d)["test_images"]
('train-images-idx3-ubyte.gz', None)
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["read_idx", "write_idx", "idx_files", "read_idx_folder", "find_idx_folder",
           "IDX_FILES"]

# type byte -> numpy dtype (big-endian, as the format stores them)
_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
# role -> (file prefix, what, idx dimension)
_ROLES = {"train_images": ("train", "images", 3), "train_labels": ("train", "labels", 1),
          "test_images": ("t10k", "images", 3), "test_labels": ("t10k", "labels", 1)}
IDX_FILES = tuple(f"{p}-{w}-idx{d}-ubyte" for p, w, d in _ROLES.values())


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an idx file (``.gz``: read through :mod:`gzip`), in native byte
    order: uint8 for MNIST's images ``[N, H, W]`` and labels ``[N]``.

    Raises ``ValueError`` naming the file when it is not an idx file or is truncated.
    """
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e}); replace it with the "
                         f"original file") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _TYPES:
        raise ValueError(f"{path} is not an idx file (its first bytes are {data[:4]!r}, not "
                         f"0 0 TYPE NDIM)"
                         + ("; it looks gzipped: name it *.gz" if data[:2] == b"\x1f\x8b"
                            else ""))
    ndim, dtype = data[3], _TYPES[data[2]]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f"{path} is truncated: its header is cut off")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    count = math.prod(shape)
    if len(data) - start != count * dtype.itemsize:
        raise ValueError(f"{path} is truncated or damaged: its header says {list(shape)} "
                         f"{dtype.name} values ({count * dtype.itemsize} bytes), it holds "
                         f"{len(data) - start} bytes")
    arr = np.frombuffer(data, dtype, count=count, offset=start).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable copy in native order


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64) as an idx file
    (gzipped when ``path`` ends in ``.gz``); the inverse of :func:`read_idx`."""
    path = Path(path)
    array = np.asarray(array)
    code = next((c for c, t in _TYPES.items() if t.kind == array.dtype.kind
                 and t.itemsize == array.dtype.itemsize), None)
    if code is None:
        raise ValueError(f"idx files hold uint8, int8, int16, int32, float32 or float64, not "
                         f"{array.dtype}")
    blob = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.astype(_TYPES[code]).tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(blob)
    return path


def idx_files(folder: str | Path) -> dict[str, Path | None]:
    """The idx files of ``folder`` by role (``train_images``, ``train_labels``,
    ``test_images``, ``test_labels``): the plain file if present, else the ``.gz``; None
    where neither is."""
    folder = Path(folder)
    out: dict[str, Path | None] = {}
    for role, (prefix, what, d) in _ROLES.items():
        names = [f"{prefix}-{what}{sep}idx{d}-ubyte{gz}" for gz in ("", ".gz") for sep in "-."]
        out[role] = next((folder / n for n in names if (folder / n).is_file()), None)
    return out


def find_idx_folder(folders: list[Path]) -> Path | None:
    """The first of ``folders`` that holds all four idx files (gzipped or not)."""
    for folder in folders:
        if all(p is not None for p in idx_files(folder).values()):
            return folder
    return None


def _images(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 3:
        raise ValueError(f"{path} holds an array of shape {list(arr.shape)}; image files are "
                         f"idx3: [N, H, W]")
    return arr[:, None]  # one channel: [N, 1, H, W]


def _labels(arr: np.ndarray, path: Path, n: int, images: Path) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"{path} holds {arr.dtype} {list(arr.shape)}; label files are idx1 "
                         f"integers [N]")
    if len(arr) != n:
        raise ValueError(f"{path} holds {len(arr)} labels but {images} holds {n} images")
    return arr.astype(np.int64)


def read_idx_folder(folder: str | Path) -> tuple:
    """``(x_train, y_train, x_test, y_test)`` of a folder of idx files: tensors, images
    ``[N, 1, H, W]`` (the files' dtype, uint8 for MNIST), labels int64 ``[N]``; ``y_*`` None without a labels file, ``x_test``
    and ``y_test`` None without ``t10k-images``. ``FileNotFoundError`` without
    ``train-images``, naming the files looked for."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder} (idx:PATH names a folder of idx files)")
    files = idx_files(folder)
    if files["train_images"] is None:
        raise FileNotFoundError(
            f"{folder} holds no train-images-idx3-ubyte[.gz]; an idx folder holds "
            f"{', '.join(IDX_FILES)} (each gzipped .gz or not; the t10k files and the labels "
            f"are optional)")
    out = []
    for split in ("train", "test"):
        ipath, lpath = files[f"{split}_images"], files[f"{split}_labels"]
        if ipath is None:
            if lpath is not None:
                raise ValueError(f"{folder} holds {lpath.name} but no t10k-images-idx3-ubyte")
            out += [None, None]
            continue
        x = _images(read_idx(ipath), ipath)
        y = None if lpath is None else _labels(read_idx(lpath), lpath, len(x), ipath)
        out += [torch.from_numpy(np.ascontiguousarray(x)),
                None if y is None else torch.from_numpy(y)]
    if (out[1] is None) != (out[3] is None) and out[2] is not None:
        raise ValueError(f"{folder}: labels for one split only; give both "
                         f"train-labels-idx1-ubyte and t10k-labels-idx1-ubyte, or neither")
    return tuple(out)
