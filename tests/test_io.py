"""Atomic writes: the target is whole or untouched, with ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from diffeosense._io import torch_save, write_json, write_text
from diffeosense.provenance import config_hash, provenance


def test_write_replaces_whole_file_with_umask_mode(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    write_text(p, "one")
    write_text(p, "two")
    assert p.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [f.name for f in p.parent.iterdir()] == ["a.txt"]  # no temporaries left


def test_failed_write_keeps_the_previous_file(tmp_path):
    p = tmp_path / "ckpt.pt"
    torch_save({"w": torch.ones(2)}, p)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        torch_save({"w": Boom()}, p)
    assert torch.equal(torch.load(p)["w"], torch.ones(2))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ckpt.pt"]


def test_json_of_tensors_and_config_hash(tmp_path):
    p = write_json(tmp_path / "r.json", {"t": torch.tensor([1.5]), "d": torch.float32})
    assert json.loads(p.read_text()) == {"t": [1.5], "d": "torch.float32"}
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    info = provenance()
    assert info["torch"] == torch.__version__ and info["threads"] >= 1


def test_dataclass_from_dict_refuses_unknown_keys():
    from diffeosense._io import dataclass_from_dict
    from diffeosense.data import DataConfig

    assert dataclass_from_dict(DataConfig, {"name": "mnist", "P": 10}).P == 10
    with pytest.raises(ValueError, match=r"unknown DataConfig keys: \['noize'\]"):
        DataConfig.from_dict({"name": "mnist", "noize": 1.0})  # a typo is never dropped
