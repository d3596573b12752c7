"""Tests of diffeosense.data.folder: ``folder:PATH`` against torchvision's ImageFolder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms import CenterCrop, Compose, PILToTensor, Resize

from diffeosense.data import DataConfig, load_dataset, read_image_folder
from diffeosense.data.folder import SPLIT_SEED, TEST_FRACTION


def _write(root, classes=("ant", "bee", "cat"), n=5, size=(10, 8), mode="RGB", seed=0):
    """``root/<class>/<i>.png``, random pixels; returns the written arrays by path."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            path = root / c / f"{i}.png"
            Image.fromarray(a).convert(mode).save(path)
            out[str(path)] = a
    return out


def _imagefolder(root, mode, *ops):
    tf = Compose([*ops, PILToTensor()])
    return ImageFolder(str(root), transform=tf, loader=lambda p: Image.open(p).convert(mode))


def _by_file(ref: ImageFolder) -> dict[str, tuple[torch.Tensor, int]]:
    return {path: ref[i] for i, (path, _) in enumerate(ref.samples)}


@pytest.mark.parametrize("ops", [(), ("resize",), ("crop",), ("resize", "crop")])
def test_train_test_layout_gives_imagefolders_tensors(tmp_path, ops):
    _write(tmp_path / "train", size=(12, 9))
    _write(tmp_path / "test", n=2, size=(12, 9), seed=1)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")  # skipped
    kw = {"resize": 6 if "resize" in ops else None, "crop": 5 if "crop" in ops else None}
    tv_ops = ([Resize(6)] if kw["resize"] else []) + ([CenterCrop(5)] if kw["crop"] else [])
    data = read_image_folder(tmp_path, **kw)
    for split, x, y, files in [("train", data.x_train, data.y_train, data.files_train),
                               ("test", data.x_test, data.y_test, data.files_test)]:
        ref = _by_file(_imagefolder(tmp_path / split, "RGB", *tv_ops))
        assert sorted(files) == sorted(ref) and x.dtype == torch.uint8
        for k, f in enumerate(files):
            assert torch.equal(x[k], ref[f][0]) and int(y[k]) == ref[f][1]
    assert data.classes == ["ant", "bee", "cat"]


def test_single_folder_is_split_per_class_with_a_fixed_seed(tmp_path):
    _write(tmp_path, n=10)
    a, b = read_image_folder(tmp_path), read_image_folder(tmp_path)
    assert a.files_test == b.files_test and a.files_train == b.files_train
    assert len(a.files_test) == 3 * round(TEST_FRACTION * 10)
    assert torch.bincount(a.y_test).tolist() == [2, 2, 2]
    assert not set(a.files_test) & set(a.files_train)
    assert len(a.files_train) + len(a.files_test) == 30
    assert a.y_test.tolist() != sorted(a.y_test.tolist())  # shuffled: classes mixed
    assert SPLIT_SEED == 20220101


def test_load_dataset_normalizes_with_the_training_statistics(tmp_path):
    _write(tmp_path, size=(7, 7))
    raw = read_image_folder(tmp_path)
    ds = load_dataset(DataConfig(f"folder:{tmp_path}"))
    x = raw.x_train.double() / 255
    mean = x.transpose(0, 1).reshape(3, -1).mean(1)
    std = x.transpose(0, 1).reshape(3, -1).std(1)
    torch.testing.assert_close(ds.x_train.double(), (x - mean.view(1, 3, 1, 1))
                               / std.view(1, 3, 1, 1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ds.mean, mean.numpy(), rtol=1e-6)
    assert ds.num_classes == 3 and ds.classes == ["ant", "bee", "cat"]
    assert torch.equal(ds.y_test, raw.y_test) and ds.name == f"folder:{tmp_path}"
    none = load_dataset(DataConfig(f"folder:{tmp_path}", normalize="none"))
    torch.testing.assert_close(none.x_train, raw.x_train.float() / 255)


def test_grayscale_folder_has_one_channel_and_the_majority_wins(tmp_path):
    _write(tmp_path, mode="L", n=4)
    assert read_image_folder(tmp_path).x_train.shape[1] == 1
    Image.new("RGB", (10, 8), (200, 10, 30)).save(tmp_path / "ant" / "colour.png")
    data = read_image_folder(tmp_path)  # 12 gray, 1 colour: all converted to L
    assert data.x_train.shape[1] == 1
    ref = _by_file(_imagefolder(tmp_path, "L"))
    for k, f in enumerate(data.files_train):
        assert torch.equal(data.x_train[k], ref[f][0])
    for c in ("ant", "bee", "cat"):
        for i in range(4):  # 13 colour, 12 gray
            Image.new("RGB", (10, 8), (i, 50, 90)).save(tmp_path / c / f"rgb{i}.png")
    assert read_image_folder(tmp_path).x_train.shape[1] == 3  # now colour is the majority


def test_sizes_that_differ_name_two_files_and_the_options(tmp_path):
    _write(tmp_path, n=3)
    Image.new("RGB", (16, 4)).save(tmp_path / "bee" / "wide.png")
    with pytest.raises(ValueError) as e:
        read_image_folder(tmp_path)
    msg = str(e.value)
    assert "0.png is 10x8" in msg and "wide.png is 16x4" in msg and "--resize" in msg
    assert read_image_folder(tmp_path, resize=4, crop=4).x_train.shape[-2:] == (4, 4)
    with pytest.raises(ValueError, match="after --resize 4.*--crop"):
        read_image_folder(tmp_path, resize=4)  # aspect ratios differ: a crop is needed


@pytest.mark.parametrize("make, error, words", [
    (lambda p: None, FileNotFoundError, "no folder"),
    (lambda p: p.mkdir(), FileNotFoundError, "no class folders"),
    (lambda p: (p / "a").mkdir(parents=True), FileNotFoundError, "Found no valid file"),
    (lambda p: [(p / "a").mkdir(parents=True), (p / "a" / "x.png").write_bytes(b"junk")],
     ValueError, "cannot read the image"),
])  # fmt: skip
def test_bad_folders_are_clear_errors(tmp_path, make, error, words):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(error, match=words):
        load_dataset(DataConfig(f"folder:{root}"))


def test_a_test_class_unknown_to_train_is_refused(tmp_path):
    _write(tmp_path / "train", classes=("a", "b"))
    _write(tmp_path / "val", classes=("a", "c"))
    with pytest.raises(ValueError, match=r"classes that .* lacks: \['c'\]"):
        read_image_folder(tmp_path)
