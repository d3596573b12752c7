"""Tests of diffeosense.data.specs (the one grammar of a dataset) and of the new DataConfig
fields: validation, round trips, and run hashes that stay those of earlier runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffeosense.data import DataConfig, DataSpec, list_datasets, load_dataset, parse_data_spec
from diffeosense.data.idx import write_idx


@pytest.mark.parametrize("spec, kind, target, options", [
    ("mnist-embedded", "named", "mnist-embedded", ""),
    ("CIFAR10", "named", "cifar10", ""),
    ("scale-detection-2d:xi=14,gap=2", "task", "scale-detection-2d", "xi=14,gap=2"),
    ("folder:data/My Photos", "folder", "data/My Photos", ""),
    ("FOLDER:/a:b", "folder", "/a:b", ""),
    ("idx:~/mnist", "idx", "~/mnist", ""),
    ("runs/Digits.NPZ", "file", "runs/Digits.NPZ", ""),
    ("x.pt", "file", "x.pt", ""),
    ("x.pth", "file", "x.pth", ""),
    ("x.npy", "file", "x.npy", ""),
])  # fmt: skip
def test_spec_forms(spec, kind, target, options):
    assert parse_data_spec(spec) == DataSpec(kind, target, options)


def test_unknown_names_and_bare_folders_say_what_to_write(tmp_path):
    with pytest.raises(ValueError) as e:
        parse_data_spec("fashion_mnist")
    msg = str(e.value)
    assert "Did you mean fashion-mnist" in msg and "folder:PATH" in msg and "cifar10" in msg
    (tmp_path / "cls").mkdir()
    with pytest.raises(ValueError, match=r"is a folder: name it folder:"):
        parse_data_spec(str(tmp_path / "cls"))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"is a folder: name it idx:"):
        parse_data_spec(str(tmp_path))
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"suffix '.csv'"):
        load_dataset(str(tmp_path / "d.csv"))
    for bad in ("", "  ", "folder:", "idx: "):
        with pytest.raises(ValueError):
            parse_data_spec(bad)


def test_list_datasets_and_labels():
    assert {"mnist-embedded", "fashion-mnist", "scale-detection-2d"} <= set(list_datasets())
    assert parse_data_spec("idx:/data/mnist").label == "idx-mnist"
    assert parse_data_spec("scale-detection-2d:xi=14").label == "scale-detection-2d:xi=14"


@pytest.mark.parametrize("kw, words", [
    ({"resize": 0}, "resize must be"), ({"crop": 2.5}, "crop must be"),
    ({"resize": True}, "resize must be"), ({"normalize": "zscore"}, "normalize must be one of"),
])  # fmt: skip
def test_data_config_refuses_bad_values(kw, words):
    with pytest.raises(ValueError, match=words):
        DataConfig(**kw)


def test_tasks_refuse_image_options():
    with pytest.raises(ValueError, match="resize=32 do not apply to the generated task"):
        load_dataset(DataConfig("scale-detection-1d", resize=32, P=8))


def test_new_fields_round_trip_and_old_configs_load():
    from diffeosense.train import TrainConfig

    cfg = TrainConfig(data=DataConfig("folder:x", resize=32, crop=28, normalize="none"))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    old = cfg.to_dict()
    for k in ("resize", "crop", "normalize"):
        old["data"].pop(k)
    assert TrainConfig.from_dict(old).data == DataConfig("folder:x")


def test_run_hashes_ignore_the_new_fields_at_their_defaults():
    from diffeosense.experiments.run import RunConfig
    from diffeosense.train import TrainConfig

    def tiny(**data):
        return RunConfig(train=TrainConfig(model="fc2", data=DataConfig(P=100, **data),
                                           epochs=1))

    base = tiny()  # (tests/test_experiment_run.py pins the hashes of earlier configs)
    d = base.to_dict()
    for k in ("resize", "crop", "normalize"):
        d["train"]["data"].pop(k)
    assert RunConfig.from_dict(d).hash() == base.hash()  # a run_config.json of before
    hashes = {tiny(resize=32).hash(), tiny(crop=20).hash(), tiny(normalize="none").hash(),
              tiny(name="folder:a").hash(), tiny(name="folder:b").hash(), base.hash()}
    assert len(hashes) == 6  # each changes the data, hence the folder (the path too)
    assert tiny(name="folder:a", root="/x").hash() == tiny(name="folder:a").hash()


def test_resume_of_a_checkpoint_written_before_the_new_fields(tmp_path):
    """A run whose checkpoint config lacks resize/crop/normalize resumes (same defaults)."""
    import torch

    from diffeosense.train import TrainConfig, train

    cfg = TrainConfig(model="fc2", data=DataConfig(P=64), epochs=2, batch_size=32)
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    last = out / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    for k in ("resize", "crop", "normalize"):
        ck["config"]["data"].pop(k)
    ck["epoch"], ck["history"] = 1, ck["history"][:1]
    torch.save(ck, last)
    res = train(cfg, out, resume=True, progress=False)
    assert [m["epoch"] for m in res.history] == [1, 2]
