"""Tests of diffeosense.data.idx and of the mnist / fashion-mnist loaders that read idx files:
every layout (torchvision's, flat, the Debian package), gzipped or not, no download when the
files are there, and an offline failure that is immediate and names every way to get them."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from diffeosense.data import DataConfig, load_dataset, read_idx, read_idx_folder, write_idx
from diffeosense.data import datasets as dsets
from diffeosense.data.idx import IDX_FILES


def _idx_bytes(a: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array, written out by hand (independent of write_idx)."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _write_mnist(folder, gz: bool, n=(12, 5), size=6, seed=0):
    """The four MNIST files of random digits in ``folder``; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n[0], size, size), np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n[0]).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n[1], size, size), np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n[1]).astype(np.uint8)}
    for name, a in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(_idx_bytes(a))
        else:
            (folder / name).write_bytes(_idx_bytes(a))
    return arrays


@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt fails the test."""
    import torchvision.datasets as tvd

    def refuse(*a, **k):
        raise AssertionError("a download was attempted")

    for cls in ("MNIST", "FashionMNIST"):
        monkeypatch.setattr(tvd, cls, refuse)
    monkeypatch.setattr(dsets, "_connect", refuse)


@pytest.mark.parametrize("code", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_inverts_write_idx(tmp_path, code):
    a = (np.arange(60).reshape(3, 4, 5) - 20 * (code != "u1")).astype(
        np.dtype(code).newbyteorder("="))
    for name in ("a.idx", "a.idx.gz"):
        b = read_idx(write_idx(tmp_path / name, a))
        assert b.dtype == a.dtype.newbyteorder("=") and np.array_equal(a, b)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_matches_numpy(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz)
    xtr, ytr, xte, yte = read_idx_folder(tmp_path)
    assert torch.equal(xtr, torch.from_numpy(arrays["train-images-idx3-ubyte"])[:, None])
    assert ytr.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert torch.equal(xte, torch.from_numpy(arrays["t10k-images-idx3-ubyte"])[:, None])
    assert yte.dtype == torch.int64 and yte.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    ds = load_dataset(f"idx:{tmp_path}")
    x = xtr.double() / 255
    torch.testing.assert_close(ds.x_train.double(), (x - x.mean()) / x.std(), atol=1e-5,
                               rtol=0)
    assert ds.num_classes == int(max(ytr.max(), yte.max())) + 1


def test_idx_folder_without_labels_or_test_files(tmp_path):
    a = _write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    ds = load_dataset(f"idx:{tmp_path}")
    assert ds.y_train is None and ds.y_test is None and ds.num_classes == 0
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    xtr, ytr, xte, yte = read_idx_folder(tmp_path)
    assert xte is None and len(xtr) == len(a["train-images-idx3-ubyte"])


def test_damaged_idx_files_are_clear_errors(tmp_path):
    _write_mnist(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_bytes(np.zeros((4, 3, 3), np.uint8)))[:-12])
    with pytest.raises(ValueError, match="damaged"):
        read_idx(p)
    p.write_bytes(gzip.compress(_idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-5]))
    with pytest.raises(ValueError, match=r"truncated or damaged: its header says \[4, 3, 3\]"):
        read_idx(p)
    (tmp_path / "plain").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x07"))
    with pytest.raises(ValueError, match="looks gzipped"):
        read_idx(tmp_path / "plain")
    with pytest.raises(ValueError, match="holds 12 labels but .* holds 3 images"):
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(np.zeros((3, 6, 6), np.uint8))))
        read_idx_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder .* a folder of idx files"):
        read_idx_folder(tmp_path / "t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no train-images"):
        load_dataset(f"idx:{tmp_path / 'empty'}")


@pytest.mark.parametrize("name, sub", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loaders_read_either_layout_without_download(tmp_path, no_download, name, sub,
                                                           layout, gz):
    folder = tmp_path / sub / "raw" if layout == "torchvision" else tmp_path
    arrays = _write_mnist(folder, gz)
    ds = load_dataset(DataConfig(name, root=str(tmp_path), normalize="none"))
    expect = torch.from_numpy(arrays["t10k-images-idx3-ubyte"])[:, None].float() / 255
    torch.testing.assert_close(ds.x_test, expect)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.num_classes == 10


def test_fashion_mnist_finds_the_debian_package(tmp_path, monkeypatch, no_download):
    """A copy of /usr/share/datasets/fashion-mnist (dataset-fashion-mnist: four .gz files):
    read as it is, nothing extracted, nothing downloaded, nothing written to the root."""
    system = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    arrays = _write_mnist(system, gz=True)
    before = sorted(p.name for p in system.iterdir())
    assert before == sorted(f"{n}.gz" for n in IDX_FILES)
    monkeypatch.setattr(dsets, "SYSTEM_DATA_DIRS", {"fashion-mnist": [system]})
    root = tmp_path / "root"
    ds = load_dataset(DataConfig("fashion-mnist", root=str(root)))
    assert ds.x_train.shape == (12, 1, 6, 6) and ds.x_test.shape == (5, 1, 6, 6)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert sorted(p.name for p in system.iterdir()) == before and not root.exists()
    # a root that holds the files is read first
    _write_mnist(root / "FashionMNIST" / "raw", gz=False, n=(7, 3))
    assert len(load_dataset(DataConfig("fashion-mnist", root=str(root))).x_train) == 7


@pytest.mark.parametrize("download", [True, False])
def test_offline_fashion_mnist_fails_at_once_naming_both_ways(tmp_path, monkeypatch, download):
    import torchvision.datasets as tvd

    timeouts = []

    def offline(host, port, timeout):
        timeouts.append(timeout)
        raise OSError(101, "Network is unreachable")

    def refuse(*a, **k):
        raise AssertionError("torchvision was asked to download")

    monkeypatch.setattr(dsets, "_connect", offline)
    monkeypatch.setattr(tvd, "FashionMNIST", refuse)
    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", ["http://fashion.example/"], raising=False)
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(DataConfig("fashion-mnist", root=str(tmp_path), download=download))
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "/usr/share/datasets" in msg
    assert "FashionMNIST/raw" in msg and "train-images-idx3-ubyte" in msg
    assert str(tmp_path) in msg and "--data-root" in msg and "download=True" not in msg
    if download:  # one quick connection attempt, bounded by the check's timeout
        assert "Network is unreachable" in msg and "fashion.example" in msg
        assert timeouts == [dsets.DOWNLOAD_CHECK_TIMEOUT] and dsets.DOWNLOAD_CHECK_TIMEOUT <= 3
    else:
        assert "--no-download" in msg and timeouts == []


def test_an_unanswered_connection_is_abandoned_after_the_timeout(monkeypatch):
    import threading

    release = threading.Event()
    monkeypatch.setattr(dsets, "_connect", lambda host, port, timeout: release.wait(30))
    try:
        why = dsets._unreachable("http://blackhole.example/x", timeout=0.05)
    finally:
        release.set()
    assert "no answer from blackhole.example within 0.05 s" in why


def test_a_reachable_server_lets_the_download_run(tmp_path, monkeypatch):
    """Online, torchvision downloads into the root (here: a fake that writes the files)."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(dsets, "_connect", lambda host, port, timeout: None)

    class FakeFashion:
        mirrors = ["http://fashion.example/"]

        def __init__(self, root, download, train):
            assert download
            _write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashion)
    assert len(load_dataset(DataConfig("fashion-mnist", root=str(tmp_path))).x_train) == 12
