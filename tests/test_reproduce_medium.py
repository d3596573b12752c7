"""``reproduce --scale medium``: the preset is valid and complete (a dry run lists its runs),
and a tiny version of it runs end to end on Fashion-MNIST files in the Debian layout."""

from __future__ import annotations

import dataclasses
import gzip
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from diffeosense._io import read_table
from diffeosense.cli import main
from diffeosense.data import datasets as dsets
from diffeosense.experiments import reproduce as rp
from diffeosense.experiments.figures import filter_spectra as fs
from diffeosense.experiments.figures import layerwise as pf
from diffeosense.experiments.figures import noisy_training as nt

MEDIUM = nt.PRESETS["medium"]


def test_medium_preset_is_the_full_fashion_mnist_with_three_seeds():
    assert (MEDIUM.dataset, MEDIUM.P, MEDIUM.seeds) == ("fashion-mnist", 10000, [0, 1, 2])
    assert len(MEDIUM.noises) >= 3 and MEDIUM.noises[0] == 0.0
    families = {n.model.rstrip("0123456789bn") for n in MEDIUM.nets}
    assert {"fc", "lenet", "alexnet", "vgg", "resnet"} <= families
    configs = nt.run_configs(MEDIUM)
    assert len(configs) == len(MEDIUM.nets) * len(MEDIUM.noises) * 3
    assert len({rc.hash() for rc in configs}) == len(configs)
    # The clean runs of the nets of Fig. 3 are tracked; no noisy run is.
    tracked = {(rc.train.model, rc.train.seed) for rc in configs if rc.track is not None}
    assert tracked == {(m, s) for m in ("lenet", "alexnet", "vgg11", "vgg11bn")
                       for s in (0, 1, 2)}
    assert all(rc.train.data.noise == 0 for rc in configs if rc.track is not None)
    # Figs. 3 and 4 reuse the grid's clean runs and add EfficientNet (1x1 channel mixing).
    lw = {rc.hash() for rc in pf.run_configs(pf.PRESETS["medium"])}
    clean = {rc.hash() for rc in configs if rc.train.data.noise == 0}
    extra = [rc for rc in pf.run_configs(pf.PRESETS["medium"]) if rc.hash() not in clean]
    assert [rc.train.model for rc in extra] == ["efficientnetb0"]
    assert {rc.hash() for rc in nt.run_configs(fs.PRESETS["medium"].training)} == lw


def test_dry_run_lists_every_run_once_and_says_what_is_done(tmp_path, capsys):
    rows = rp.plan(["all"], "medium", tmp_path)
    runs = [r for r in rows if r["hash"] is not None]
    n = len(nt.run_configs(MEDIUM)) + 1  # + the EfficientNet run of Figs. 3 and 4
    assert len(runs) == n and {r["status"] for r in runs} == {"new"}
    assert {r["figure"] for r in runs} == {"noisy-training", "layerwise"}
    shared = [r for r in runs if r["shared_with"]]
    assert all(set(r["shared_with"]) <= {"layerwise", "filter-spectra"} for r in shared)
    assert "vgg11bn-w0.25x" in {r["model"] for r in runs}
    assert "scale-detection" not in {r["figure"] for r in rows}  # no medium preset
    assert main(["reproduce", "all", "--scale", "medium", "--out", str(tmp_path / "o"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{n} runs in ") and f"{n} new" in out
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def _idx_gz(path, a: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
                + a.tobytes())


def _debian_fashion_mnist(folder, n_train=96, n_test=48, seed=0):
    """The four Fashion-MNIST files as the Debian package installs them (gzipped idx in one
    folder), of images whose class is the brightness of a patch (learnable)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            r, col = divmod(int(c), 5)
            x[i, 4 + 10 * r: 12 + 10 * r, 2 + 5 * col: 6 + 5 * col] = 250
        _idx_gz(folder / f"{split}-images-idx3-ubyte.gz", x)
        _idx_gz(folder / f"{split}-labels-idx1-ubyte.gz", y)


@pytest.mark.slow
def test_a_tiny_medium_preset_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets" / "fashion-mnist"
    _debian_fashion_mnist(system)
    monkeypatch.setattr(dsets, "SYSTEM_DATA_DIRS", {"fashion-mnist": [system]})
    # The workers are spawned processes, which do not see the patch above: they find the
    # files through the data root of the environment (where Debian's package, installed or
    # not on the test machine, plays no part).
    monkeypatch.setenv("DIFFEOSENSE_DATA", str(system))
    keep = {"fc2", "lenet", "alexnet"}
    tiny = dataclasses.replace(
        MEDIUM, P=64, epochs=2, noises=[0.0, 30.0], n_probes=16,
        nets=[dataclasses.replace(n, epochs=2) for n in MEDIUM.nets if n.model in keep],
        track={**MEDIUM.track, "n_probes": 8})
    lw_nets = [n for n in pf.PRESETS["medium"].training.nets
               if n.model in keep or n.model == "efficientnetb0"]
    clean = dataclasses.replace(pf.clean_nets(tiny, sorted(keep)), nets=[
        dataclasses.replace(n, epochs=1 if n.model == "efficientnetb0" else 2)
        for n in lw_nets])
    monkeypatch.setitem(nt.PRESETS, "medium", tiny)
    monkeypatch.setitem(pf.PRESETS, "medium", dataclasses.replace(
        pf.PRESETS["medium"], training=clean, n_probes=16, n_shuffles=1))
    monkeypatch.setitem(fs.PRESETS, "medium", fs.FilterSpectraConfig(clean))
    opts = rp.ReproduceOptions(workers=2, progress=False)
    path = rp.reproduce(["all"], "medium", tmp_path / "out", "cmd", opts)
    out = tmp_path / "out"
    runs = read_table(out / "noisy_training" / "noisy_training_runs.csv")[0]
    assert len(runs) == 3 * 2 * 3 and set(runs["seed"]) == {0, 1, 2}
    # Two epochs on 64 images: a net trained at s = 30 may miss every test image; the clean
    # ones learn the patches (chance is 0.9).
    assert runs["test_error"].between(0, 1).all()
    assert runs.loc[runs["noise"] == 0, "test_error"].min() < 0.5
    lw = read_table(out / "layerwise" / "layerwise.csv")[0]
    assert set(lw["seed"]) == {0, 1, 2}
    assert set(lw.loc[lw["model"] == "efficientnetb0-w0.25x", "seed"]) == {0}
    # When R falls: every tracked clean run (LeNet and AlexNet, 3 seeds) at epochs 0, 1, 2.
    track = read_table(out / "layerwise" / "layerwise_tracking.csv")[0]
    assert sorted(set(track["epoch"])) == [0, 1, 2]
    assert len(track) == 2 * 3 * 3 and track["R"].gt(0).all()
    when = read_table(out / "layerwise" / "layerwise_when.csv")[0]
    assert len(when) == 6 and set(when["when"]) <= {"early", "late", "not at all"}
    homo = read_table(out / "filter_spectra" / "filter_spectra_homogeneous.csv")[0]
    assert set(homo["seed"]) == {0, 1, 2}
    html = path.read_text()
    root = ET.fromstring(html.split("\n", 1)[1])
    assert "fig-layerwise-tracking" in [f.get("id") for f in root.iter("figure")]
    assert "Not at this scale (no medium preset): scale-detection" in html
    # Resumable: a second call trains and measures nothing again.
    done = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("done")}
    assert len(done) == 3 * 2 * 3 + 1
    rp.reproduce(["all"], "medium", out, "again", opts)
    assert {p: p.stat().st_mtime_ns for p in done} == done


def test_the_fast_training_path_makes_other_runs_and_only_where_it_applies(tmp_path, capsys):
    fast = rp.ReproduceOptions(train={"precision": "bf16", "channels_last": True})
    rows = {r["hash"] for r in rp.plan(["noisy-training"], "medium", tmp_path)}
    fast_rows = rp.plan(["noisy-training"], "medium", tmp_path, fast)
    assert len(fast_rows) == len(rows) and not rows & {r["hash"] for r in fast_rows}
    (rc,) = [c for c in pf.run_configs(pf.PRESETS["medium"], train=fast.train)
             if c.train.model == "efficientnetb0"]
    assert (rc.train.precision, rc.train.channels_last, rc.train.compile) == ("bf16", True, False)
    with pytest.raises(ValueError, match="scale-detection trains its own way"):
        rp.reproduce(["all"], "quick", tmp_path / "o", "cmd", fast)
    with pytest.raises(ValueError, match="fast-path fields"):
        rp.reproduce(["noisy-training"], "quick", tmp_path / "o", "cmd",
                     rp.ReproduceOptions(train={"epochs": 1}))
    assert not (tmp_path / "o").exists()
    assert main(["reproduce", "layerwise", "--scale", "medium", "--precision", "bf16",
                 "--out", str(tmp_path / "f"), "--dry-run"]) == 0
    assert "13 new" in capsys.readouterr().out
