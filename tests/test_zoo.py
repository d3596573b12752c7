"""The model zoo (``experiments/zoo.py``, ``diffeosense zoo``): each model's rows are
``measure`` of that model, the test error is a direct count, a failing model is named and the
others kept, a re-run skips the finished ones, and the figure shows what the table holds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from diffeosense import sensitivity
from diffeosense.experiments.zoo import (
    ZOO_COLUMNS,
    ZooModel,
    classification_error,
    load_zoo,
    run_zoo,
)
from diffeosense.models import create_model
from diffeosense.sensitivity import COLUMNS, SensitivityResult, measure
from diffeosense.sources import resolve_data

SMALL = {"depth": 2, "width": 4}


@pytest.fixture
def npz(tmp_path):
    """28 train + 20 test 12 x 12 one-channel images, 3 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.integers(0, 256, (28, 1, 12, 12), np.uint8), y=rng.integers(0, 3, 28),
             x_test=rng.integers(0, 256, (20, 1, 12, 12), np.uint8),
             y_test=rng.integers(0, 3, 20))
    return str(path)


def _direct(spec, kwargs, data, **options):
    """The model built as a zoo builds it (seed 0, the data's channels, classes and, where
    the net takes it, image size) and measured by ``measure`` itself."""
    from diffeosense.models._registry import model_options

    src = resolve_data(data, n_probes=options.pop("n_probes"))
    size = {"image_size": 12} if "image_size" in model_options(spec) else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = create_model(spec, in_channels=1, num_classes=3, **size, **kwargs)
    return net, src, measure(net, src.probes, n_probes=len(src.probes), seed=0,
                             perturbation=src.perturbation, **options)


def test_a_zoo_row_is_measure_of_that_model(tmp_path, npz):
    z = run_zoo([ZooModel("simplecnn", SMALL), "fc2"], data=npz, out=tmp_path / "z",
                n_probes=12, layers="all")
    assert [o["status"] for o in z.outcomes] == ["done", "done"]
    assert list(z.table.columns) == ZOO_COLUMNS
    for name, spec, kw in [("simplecnn depth=2,width=4", "simplecnn", SMALL), ("fc2", "fc2", {})]:
        _, _, res = _direct(spec, kw, npz, n_probes=12, layers="all")
        rows = z.table[z.table.model == name]
        assert set(rows.spec) == {spec} and set(rows.data) == {npz}
        pd.testing.assert_frame_equal(rows[COLUMNS].reset_index(drop=True), res.table)
    # the same rows read back from zoo.csv, and from the model's own table (plot reads it)
    df, meta = load_zoo(tmp_path / "z")
    pd.testing.assert_frame_equal(df[COLUMNS], z.table[COLUMNS])
    assert meta["format"] == "diffeosense.zoo/1" and len(meta["models"]) == 2
    one = SensitivityResult.load(z.outcomes[1]["file"])
    assert one.config["model"] == "fc2" and one.config["data"] == npz
    pd.testing.assert_frame_equal(one.table, _direct("fc2", {}, npz, n_probes=12,
                                                     layers="all")[2].table)


def test_the_test_error_is_a_direct_count(tmp_path, npz):
    z = run_zoo([ZooModel("simplecnn", SMALL)], data=npz, out=tmp_path / "z", n_probes=8,
                n_test=13, measure_kwargs={"batch_size": 4})
    net, src, _ = _direct("simplecnn", SMALL, npz, n_probes=8)
    x, y = src.dataset.x_test[:13], src.dataset.y_test[:13]
    with torch.no_grad():
        wrong = int((net.eval()(x).argmax(1) != y).sum())
    row = z.table.iloc[-1]
    assert row.layer == "output" and len(z.table) == 1  # layers="output" by default
    assert row.n_test == 13 and row.test_error == wrong / 13
    assert row.test_error_se == pytest.approx(np.sqrt(wrong / 13 * (1 - wrong / 13) / 13))
    assert (row.output_classes, row.data_classes, row.error_reason) == (3, 3, "")
    # all of the test split by default, whatever the batch size
    full = classification_error(net, src.dataset, batch_size=7)
    with torch.no_grad():
        wrong = int((net(src.dataset.x_test).argmax(1) != src.dataset.y_test).sum())
    assert full["n"] == 20 and full["error"] == wrong / 20


def test_other_classes_or_no_labels_give_no_error_with_a_reason(tmp_path, npz):
    # a head of 5 classes on 3-class data (as a pretrained 1000-class head on CIFAR-10)
    z = run_zoo([ZooModel("fc2", {"num_classes": 5})], data=npz, out=tmp_path / "a",
                n_probes=8)
    row = z.table.iloc[0]
    assert np.isnan(row.test_error) and row.n_test == 0
    assert (row.output_classes, row.data_classes) == (5, 3)
    assert "5 outputs per sample; the dataset has 3 classes" in row.error_reason
    assert np.isfinite(row.R)  # D, G, R are measured all the same
    meta = SensitivityResult.load(z.outcomes[0]["file"]).config["zoo"]
    assert meta["output_classes"] == 5 and "3 classes" in meta["error_reason"]
    assert load_zoo(tmp_path / "a")[0].error_reason.iloc[0] == row.error_reason
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, x=np.random.default_rng(0).random((10, 1, 12, 12)).astype(np.float32))
    z = run_zoo(["fc2"], data=str(unlabelled), out=tmp_path / "b", n_probes=8)
    assert z.table.error_reason.iloc[0] == "the dataset has no labels"


def test_a_failing_model_is_named_and_the_others_kept(tmp_path, npz):
    z = run_zoo(["fc2", "nosuchnet", "torchvision:resnet18", ZooModel("simplecnn", SMALL)],
                data=npz, out=tmp_path / "z", n_probes=8)
    status = {o["model"]: o["status"] for o in z.outcomes}
    assert status == {"fc2": "done", "nosuchnet": "failed", "torchvision:resnet18": "failed",
                      "simplecnn depth=2,width=4": "done"}
    why = {o["model"]: o["error"] for o in z.failed}
    assert "unknown model 'nosuchnet'" in why["nosuchnet"]
    assert "cannot take the samples" in why["torchvision:resnet18"]  # 3 channels, data has 1
    assert list(z.table.model) == ["fc2", "simplecnn depth=2,width=4"]
    summary = json.loads((tmp_path / "z" / "zoo.json").read_text())
    assert [m["status"] for m in summary["models"]] == ["done", "failed", "failed", "done"]
    with pytest.raises(ValueError, match="listed twice"):
        run_zoo(["fc2", "fc2"], data=npz, out=tmp_path / "z")
    with pytest.raises(ValueError, match="n_probes and seed are run_zoo's own"):
        run_zoo(["fc2"], data=npz, out=tmp_path / "z", measure_kwargs={"seed": 1})


def test_a_rerun_skips_the_finished_models(tmp_path, npz, monkeypatch):
    models = ["fc2", ZooModel("simplecnn", SMALL), "nosuchnet"]
    first = run_zoo(models, data=npz, out=tmp_path / "z", n_probes=8)
    calls = []
    real = sensitivity.measure

    def must_not_measure(*a, **k):
        raise AssertionError("a finished model was measured again")

    monkeypatch.setattr(sensitivity, "measure", must_not_measure)
    again = run_zoo(models, data=npz, out=tmp_path / "z", n_probes=8)
    assert [o["status"] for o in again.outcomes] == ["skipped", "skipped", "failed"]
    pd.testing.assert_frame_equal(again.table, first.table)  # read back exactly

    def counting(*a, **k):
        calls.append(a[0].diffeosense_spec)
        return real(*a, **k)

    monkeypatch.setattr(sensitivity, "measure", counting)
    # another option: measured anew, into another file; the first ones stay
    other = run_zoo(models[:2], data=npz, out=tmp_path / "z", n_probes=10)
    assert calls == ["fc2", "simplecnn"] and set(other.table.n_probes) == {10}
    assert len(list((tmp_path / "z" / "models").glob("*.csv"))) == 4
    # a damaged table is measured again, with a warning
    path = first.outcomes[0]["file"]
    with open(path, "a") as f:
        f.write("junk\n")
    with pytest.warns(UserWarning, match="cannot be read"):
        fixed = run_zoo(models[:1], data=npz, out=tmp_path / "z", n_probes=8)
    assert fixed.outcomes[0]["status"] == "done" and calls[-1] == "fc2"
    pd.testing.assert_frame_equal(fixed.table.drop(columns="seconds"),
                                  first.table.iloc[:1].drop(columns="seconds"))


def test_the_figure_plots_test_error_against_r(tmp_path, npz):
    from diffeosense.plots.zoo import plot_zoo

    z = run_zoo(["fc2", ZooModel("simplecnn", SMALL), ZooModel("fc2", {"num_classes": 5},
                                                                 label="fc2-5")],
                data=npz, out=tmp_path / "z", n_probes=8, layers="all")
    fig = plot_zoo(z.table, path=tmp_path / "zoo.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    out = z.table[z.table.layer == "output"].set_index("model")
    points = {t.get_text(): t.xy for t in ax.texts}
    assert set(points) == {"fc2", "simplecnn depth=2,width=4"}  # fc2-5 has no test error
    for name, (x, y) in points.items():
        assert x == out.R[name] and y == pytest.approx(100 * out.test_error[name])
    assert any("fc2-5" in t.get_text() for t in fig.texts)  # named as not shown
    assert (tmp_path / "zoo.png").stat().st_size > 5_000


def test_cli_zoo(tmp_path, npz, capsys):
    from diffeosense.cli import main

    out = tmp_path / "z"
    argv = ["zoo", "--models", "fc2", "simplecnn", "--model-kw", "width=4", "--data", npz,
            "--n-probes", "8", "--n-test", "all", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "zoo.png").stat().st_size > 5_000
    df, _ = load_zoo(out)
    assert list(df.model) == ["fc2 width=4", "simplecnn width=4"]
    assert set(df.n_test) == {20} and set(df.layer) == {"output"}
    assert main(argv) == 0 and '"skipped": 2' in capsys.readouterr().out
    assert main([*argv[:3], "nosuchnet", *argv[3:]]) == 1
    text = capsys.readouterr().out
    assert "1 model(s) failed: nosuchnet" in text and "unknown model" in text


def test_a_timm_model_joins_the_zoo(tmp_path, npz):
    pytest.importorskip("timm")
    z = run_zoo(["timm:resnet18"], data=npz, out=tmp_path / "z", n_probes=8)
    assert z.outcomes[0]["status"] == "done" and z.table.output_classes.iloc[0] == 3
