"""Tests of diffeosense.data.arrays: ``.npz``, ``.npy`` and ``.pt`` datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffeosense.data import DataConfig, load_dataset, read_array_file


def _rng():
    return np.random.default_rng(0)


def test_npz_with_both_splits_matches_numpy(tmp_path):
    r = _rng()
    x, xt = r.integers(0, 256, (20, 3, 8, 8), np.uint8), r.integers(0, 256, (6, 3, 8, 8), np.uint8)
    y, yt = r.integers(0, 4, 20), r.integers(0, 4, 6)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt)
    ds = load_dataset(str(tmp_path / "d.npz"))
    f = x.astype(np.float64) / 255
    mean, std = f.mean(axis=(0, 2, 3)), f.std(axis=(0, 2, 3), ddof=1)
    expect = (xt / 255 - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(ds.x_test.numpy(), expect, atol=1e-5)
    assert ds.y_train.tolist() == y.tolist() and ds.y_test.dtype == torch.int64
    assert ds.num_classes == int(max(y.max(), yt.max())) + 1


@pytest.mark.parametrize("save", ["dict", "tuple", "tensor", "npy"])
def test_pt_and_npy_files(tmp_path, save):
    x = torch.rand(10, 1, 6, 6)
    y = torch.arange(10) % 3
    path = tmp_path / ("d.npy" if save == "npy" else "d.pt")
    if save == "dict":
        torch.save({"x": x, "y": y}, path)
    elif save == "tuple":
        torch.save((x, y), path)
    elif save == "tensor":
        torch.save(x, path)
    else:
        np.save(path, x.numpy())
    a = read_array_file(path)
    assert torch.equal(a["x"], x)  # floats kept as they are
    assert (a["y"] is None) == (save in ("tensor", "npy"))
    ds = load_dataset(DataConfig(str(path), normalize="none"))
    assert torch.equal(ds.x_train, x) and ds.x_test is None


def test_shapes_one_channel_images_signals_and_layout(tmp_path):
    np.savez(tmp_path / "hw.npz", x=np.zeros((4, 9, 7), np.float32))
    assert read_array_file(tmp_path / "hw.npz")["x"].shape == (4, 1, 9, 7)
    np.savez(tmp_path / "sig.npz", x=np.ones((4, 2, 50), np.float32))
    assert read_array_file(tmp_path / "sig.npz")["x"].shape == (4, 2, 50)
    np.savez(tmp_path / "sig8.npz", x=np.ones((4, 8, 50), np.float32), layout="signals")
    assert read_array_file(tmp_path / "sig8.npz")["x"].shape == (4, 8, 50)
    np.savez(tmp_path / "img3.npz", x=np.ones((4, 3, 50), np.float32), layout="images")
    assert read_array_file(tmp_path / "img3.npz")["x"].shape == (4, 1, 3, 50)
    ds = load_dataset(str(tmp_path / "sig.npz"))  # signals normalized per channel
    assert ds.x_train.shape == (4, 2, 50) and ds.std == [1.0, 1.0]  # constant: std kept 1


def test_labels_pm1_are_a_binary_task_and_integral_floats_are_classes(tmp_path):
    x = np.zeros((4, 1, 5, 5), np.float32)
    np.savez(tmp_path / "pm.npz", x=x, y=np.array([1.0, -1.0, 1.0, -1.0]))
    ds = load_dataset(str(tmp_path / "pm.npz"))
    assert ds.y_train.is_floating_point() and ds.num_classes == 1
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0.0, 2.0, 1.0, 2.0]))
    ds = load_dataset(str(tmp_path / "f.npz"))
    assert ds.y_train.tolist() == [0, 2, 1, 2] and ds.num_classes == 3


@pytest.mark.parametrize("arrays, words", [
    ({"X": np.zeros((2, 4, 4))}, r"unknown: \['X'\]"),
    ({"x": np.zeros((2, 4, 4), np.int64)}, "dtype torch.int64; give uint8"),
    ({"x": np.zeros((2, 8, 8, 3), np.uint8)}, "channels-last"),
    ({"x": np.zeros((2, 3))}, r"shape \[2, 3\]"),
    ({"x": np.zeros((3, 1, 4, 4)), "y": np.arange(2)}, "2 labels for 3 samples"),
    ({"x": np.zeros((2, 1, 4, 4)), "y": np.array([0.5, 1])}, "non-integer"),
    ({"x": np.zeros((2, 1, 4, 4)), "y": np.array([-2, 1])}, "negative labels"),
    ({"x": np.zeros((2, 1, 4, 4)), "x_test": np.zeros((2, 1, 5, 5))}, "must agree"),
    ({"x": np.zeros((2, 1, 4, 4)), "y": np.arange(2), "x_test": np.zeros((2, 1, 4, 4))},
     "labels for one split only"),
    ({"x": np.zeros((2, 1, 4, 4)), "y_test": np.arange(2)}, "y_test without x_test"),
    ({"x": np.zeros((2, 1, 4, 4)), "layout": "video"}, "layout must be one of"),
])  # fmt: skip
def test_bad_files_are_clear_errors(tmp_path, arrays, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=words):
        load_dataset(str(tmp_path / "bad.npz"))


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset file"):
        load_dataset(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        load_dataset(str(tmp_path / "obj.npz"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        load_dataset(str(tmp_path / "junk.pt"))
    torch.save({"x": torch.zeros(2, 1, 3, 3), "model": torch.nn.Linear(2, 2)},
               tmp_path / "code.pt")  # a module needs pickle's globals: refused unrun
    with pytest.raises(ValueError, match="cannot read"):
        load_dataset(str(tmp_path / "code.pt"))


def test_resize_and_crop_apply_to_arrays_as_to_images(tmp_path):
    from torchvision.transforms.functional import center_crop, resize

    x = torch.rand(5, 3, 12, 16)
    torch.save({"x": x}, tmp_path / "d.pt")
    ds = load_dataset(DataConfig(str(tmp_path / "d.pt"), resize=8, crop=6, normalize="none"))
    torch.testing.assert_close(ds.x_train, center_crop(resize(x, [8], antialias=True), [6, 6]))
    np.savez(tmp_path / "s.npz", x=np.zeros((3, 1, 30), np.float32))
    with pytest.raises(ValueError, match="apply to images"):
        load_dataset(DataConfig(str(tmp_path / "s.npz"), crop=4))
    with pytest.raises(ValueError, match="needs 3 channels"):
        load_dataset(DataConfig(str(tmp_path / "s.npz"), normalize="imagenet"))
