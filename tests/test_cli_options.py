"""The CLI's shared option groups (cli/_options.py) and the shared resolution of model, data,
probes and device (diffeosense.sources)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffeosense.cli import _options, build_parser, main
from diffeosense.data import DataConfig
from diffeosense.probes import select_probes, task_perturbation
from diffeosense.sources import check_fits, resolve_data, resolve_device, resolve_model

ROOT = Path(__file__).resolve().parents[1]
# Every README / --help example command (and a few with every option), parsed by the parser
# before the option groups were shared: `diffeosense.cli.build_parser()` on main at 9e26e98.
EXPECTED = json.loads((Path(__file__).parent / "_cli_parses.json").read_text())


def _parse(command: str) -> dict:
    ns = vars(build_parser().parse_args(shlex.split(command)[1:]))
    ns["func"] = ns["func"].__name__
    return json.loads(json.dumps(ns))  # as stored: tuples are lists


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_commands_parse_to_the_same_values_as_before(command):
    got = _parse(command)
    # a command may have gained options (reproduce, scale-detection-2d: every backend's);
    # every value it had is the same
    assert {k: got.get(k, "MISSING") for k in EXPECTED[command]} == EXPECTED[command]


def test_the_readme_commands_are_all_checked():
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("diffeosense "):
                assert line in EXPECTED, line


@pytest.mark.parametrize("flags, backend, options", [
    ("", "local", {}),
    ("--backend ray --address auto", "ray", {"address": "auto", "cpus_per_run": 1}),
    ("--backend slurm --partition gpu --gpus 1 --time 240 --cpus 2 --workers 3", "slurm",
     {"partition": "gpu", "time_min": 240, "gpus": 1, "cpus": 2, "mem_gb": None,
      "array_parallelism": None, "cluster": None}),
])
def test_backend_args_are_the_same_for_every_command(flags, backend, options):
    p = build_parser()
    got = [_options.backend_from_args(p.parse_args(shlex.split(c + " " + flags)))
           for c in ("sweep s.toml", "reproduce all --out o", "scale-detection-2d",
                     "scale-detection")]
    assert got[0] == got[1] == got[2] == got[3]
    assert got[0][0] == backend and got[0][2] == options
    assert got[0][1] == (3 if "--workers" in flags else None)


def test_the_measure_options_become_a_measure_config():
    from diffeosense.sensitivity import MeasureConfig

    args = build_parser().parse_args(shlex.split(
        "measure --model lenet --layers conv1,relu1 --noise 0.5 --statistic median --out o"))
    c = MeasureConfig(**_options.measure_options(args))
    assert c.layers == ["conv1", "relu1"] and c.probe_noise == 0.5 and c.statistic == "median"
    assert (c.n_probes, c.seed, c.perturbation) == (500, 0, None)  # None: the data's default


def test_resolve_data_keeps_the_checkpoints_split():
    own = DataConfig(name="scale-detection-1d", P=64, seed=5)
    ckpt = SimpleNamespace(train_config=SimpleNamespace(data=own))
    d = resolve_data(None, ckpt, n_probes=8)
    assert (d.config.P, d.config.seed, d.name) == (64, 5, "scale-detection-1d")
    # the same dataset with other options: the checkpoint's P and seed stay (pooling) ...
    d = resolve_data("scale-detection-1d:xi=16", ckpt, n_probes=8)
    assert (d.config.P, d.config.seed, d.name) == (64, 5, "scale-detection-1d:xi=16")
    # ... unless told not to (measure), or another dataset
    d = resolve_data("scale-detection-1d:xi=16", ckpt, n_probes=8, keep_split=False)
    assert (d.config.P, d.config.seed) == (DataConfig().P, DataConfig().seed)
    assert resolve_data("mnist-embedded", ckpt, n_probes=4).config.P == DataConfig().P


def test_a_task_gets_balanced_probes_and_its_pixel_move():
    d = resolve_data("scale-detection-1d", n_probes=10)
    assert d.order == "balanced" and d.perturbation == task_perturbation("scale-detection-1d")
    assert torch.equal(d.probes, select_probes(d.dataset, 10, order="balanced"))
    assert d.meta["probes"] == "test split, balanced across the classes" and "task" in d.meta
    m = resolve_data(None, n_probes=6)
    assert (m.name, m.order, m.perturbation, len(m.probes)) == ("mnist-embedded", "split",
                                                                  "diffeo", 6)
    assert torch.equal(m.probes, m.dataset.x_test[:6])
    assert len(resolve_data(None).probes) == len(m.dataset.x_test)  # None: all of the split


def test_model_source_and_device():
    with pytest.raises(ValueError, match="one of the two"):
        resolve_model()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_model(checkpoint="nope.pt")
    src = resolve_model(model="lenet", model_seed=3)
    data = resolve_data(None, src, n_probes=4)
    a, b = src.build(data), src.build(data)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert src.meta == {"model": "lenet", "model_seed": 3}
    assert resolve_device("cpu") == "cpu"
    assert resolve_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    check_fits(a, "lenet", data.probes, data.name, "")
    with pytest.raises(ValueError, match="lenet is a 2D network.*signals|lenet is a 2D"):
        check_fits(a, "lenet", resolve_data("scale-detection-1d", n_probes=4).probes,
                   "scale-detection-1d", "hint")


def test_measure_refuses_a_net_that_cannot_take_the_data_before_measuring(tmp_path, capsys,
                                                                         monkeypatch):
    import diffeosense.sensitivity as S

    def never(*a, **k):
        raise AssertionError("measured")

    monkeypatch.setattr(S, "measure", never)
    rc = main(["measure", "--model", "lenet", "--data", "scale-detection-1d", "--out",
               str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "lenet is a 2D network" in err and "scale-detection-1d" in err
    assert "choose a --data whose samples it takes" in err and "Traceback" not in err
