"""The scale-detection experiment: engine vs theory on the idealized net, end to end, resumption.

(a) The idealized pure-pooling net computed two ways: the general sensitivity engine
(``measure``) on ``homogeneous_pooling_net`` with all N one-hot probes, a circular shift by one
as the perturbation, i.i.d. noise of the batch-matched variance and the all-pairs-including-
diagonal denominator, against ``theory.pooling_sensitivities``. D, its numerator and the
denominator are deterministic on both sides and agree to 1e-9 (relative). G is a Monte-Carlo
mean in the engine (fresh noise per probe) and exact in the theory: they agree within 4.5
standard errors of the engine's per-probe noise numerators (the denominators being equal to
1e-9, the comparison is on the numerator). The engine's noise draws differ from the theory's
Monte-Carlo route (different streams), so no 1e-9 comparison of G is possible or claimed.
(b) A tiny experiment runs end to end; a re-run skips the finished units; a unit whose files
were removed is recomputed identically (determinism for a seed, and resumption).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from diffeosense.experiments.run import run_dir
from diffeosense.experiments.scale_detection import (
    ScaleDetectionExperiment,
    fit_exponents,
    preset,
    run,
    run_configs,
    theory_table,
    unit_folder,
)
from diffeosense.models.cnn1d import homogeneous_pooling_net
from diffeosense.sensitivity import measure
from diffeosense.theory import pooling_sensitivities


def _shift(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The theory's diffeo: tau x_i = x_{i+1 mod N} (the active pixel moves right by one)."""
    return torch.roll(x, 1, dims=-1)


@pytest.mark.parametrize("noise", ["gaussian", "rectified"])
@pytest.mark.parametrize("F, s, depth, N", [(2, 2, 5, 64), (3, 3, 3, 54), (3, 1, 6, 40),
                                            (2, 1, 5, 32)])
def test_idealized_net_engine_matches_theory(F, s, depth, N, noise):
    A, repeats = 2.5, 40
    net = homogeneous_pooling_net(depth, F, s)
    probes = A * torch.eye(N, dtype=torch.float64).unsqueeze(1)  # [N, 1, N]: x_i = A e_i
    # Every position, repeated: the pair denominator over all probes (i = j included) is
    # unchanged by repetition, and the repeats give the noise numerator more draws.
    data = probes.repeat(repeats, 1, 1)
    layers = [f"features.act{k}" for k in range(1, depth + 1)]
    res = measure(net, data, layers=layers, perturbation=_shift, n_probes=len(data),
                  batch_size=N, seed=3, noise_match="batch", noise_rectify=noise == "rectified",
                  denominator="pairs-incl-diag")
    th = pooling_sensitivities(depth, F, s, n=N, amplitude=A, noise=noise, include_diag=True)
    for k, name in enumerate(layers):
        row = res[name]
        assert row.denominator == pytest.approx(th.den[k], rel=1e-9, abs=0)
        assert row.num_D == pytest.approx(th.d_num[k], rel=1e-9, abs=0)
        assert row.D == pytest.approx(th.D[k], rel=1e-9, abs=0)
        b = res.per_probe[name][1]  # per-probe ||f(x + eta) - f(x)||^2
        se = b.std(ddof=1) / math.sqrt(len(b))
        assert abs(b.mean() - th.g_num[k]) < 4.5 * se, (name, b.mean(), th.g_num[k], se)
        assert row.G == pytest.approx(b.mean() / th.den[k], rel=1e-9)


def test_idealized_net_engine_detects_a_wrong_convention():
    # The same comparison fails with the other denominator (pairs excluding i = j): the test
    # above has the power to tell the conventions apart.
    N, depth = 32, 3
    net = homogeneous_pooling_net(depth, 2, 2)
    probes = torch.eye(N, dtype=torch.float64).unsqueeze(1)
    res = measure(net, probes, layers=["features.act2"], perturbation=_shift, n_probes=N,
                  batch_size=N, noise_match="batch", denominator="pairs-excl-diag")
    th = pooling_sensitivities(depth, 2, 2, n=N, include_diag=True)
    assert res["features.act2"].D == pytest.approx(th.D[1] * (N - 1) / N, rel=1e-9)
    assert abs(res["features.act2"].D - th.D[1]) > 1e-3 * th.D[1]


def _tiny(**kw) -> ScaleDetectionExperiment:
    # N = 16, xi = 4: 32 pairs per class; P = 24, 40 test pairs. Two 3-layer nets of width 4,
    # in the lazy preset's regime (the mechanics do not depend on it).
    base = dict(preset="tiny", size=16, xi=4, gap=2, train_size=24, depths=(3, 3), width=4,
                epochs=3, seeds=(0,), measure_batch_size=64)
    return preset("lazy", **{**base, **kw})


def test_tiny_experiment_end_to_end_resumes_and_is_deterministic(tmp_path):
    cfg = _tiny()
    first = run(cfg, tmp_path, progress=False)
    root = first.out_dir
    assert root.name == f"scale-detection-{cfg.folder_hash()}"
    assert sorted(first.units_run) == [(1, 0), (2, 0)] and first.units_skipped == []
    for name in ("config.json", "sensitivity.csv", "aggregate.csv", "theory.csv",
                 "exponents.csv", "summary.json"):
        assert (root / name).exists(), name
    sens = first.sensitivity
    assert set(sens.state) == {"init", "trained"} and set(sens.stride) == {1, 2}
    acts = sens[sens.layer.str.contains(r"act\d+$")]
    assert sorted(set(acts.k)) == [1.0, 2.0, 3.0]
    # Norm-matched noise: at the input, D = G (R = 1) for every unit, before and after.
    inp = sens[sens.layer == "input"]
    np.testing.assert_allclose(inp.R, 1.0, rtol=1e-5)
    # Training changed the weights: the trained curves differ from the init ones.
    a = acts[acts.state == "init"].D.to_numpy()
    b = acts[acts.state == "trained"].D.to_numpy()
    assert not np.allclose(a, b)
    assert set(first.exponents.quantity) == {"D", "G", "R"}
    assert set(first.exponents.view) == {"full", "channel-mean"}
    assert len(first.exponents) == 2 * 2 * 2 * 3
    # Both views in the tables, for every activation layer ([C, N] representations).
    assert set(sens.view) == {"full", "channel-mean"}
    assert (acts.groupby(["stride", "state", "layer"]).view.nunique() == 2).all()

    # The units are ordinary `diffeosense train` runs whose dataset spec names the task: the
    # checkpoint alone gives the experiment's split (what `diffeosense pooling` reads).
    from diffeosense.data import load_dataset
    from diffeosense.data.scale_detection import make_scale_detection
    from diffeosense.train import load_checkpoint

    _, tcfg, _ = load_checkpoint(unit_folder(cfg, tmp_path, 2, 0) / "train" / "checkpoints"
                                 / "last.pt")
    assert tcfg.data.name == cfg.dataset_name() and tcfg.data.name.startswith(
        "scale-detection-1d:size=16,xi=4.0,gap=2.0,task=distance")
    ds, data = load_dataset(tcfg.data), make_scale_detection(cfg.data_config())
    assert torch.equal(ds.x_test, data.x_test) and torch.equal(ds.x_train, data.x_train)

    # A re-run of the same config finds every unit finished and gives the same tables.
    again = run(cfg, tmp_path, progress=False)
    assert again.units_run == [] and sorted(again.units_skipped) == [(1, 0), (2, 0)]
    pd.testing.assert_frame_equal(again.sensitivity, first.sensitivity)

    # Resumption: a unit whose measurement after training was lost (killed before its end)
    # is completed from its training checkpoint; a unit removed entirely is retrained from
    # scratch. Both give the same numbers as before (deterministic for a seed).
    u1 = unit_folder(cfg, tmp_path, 1, 0)
    (u1 / "done").unlink()
    (u1 / "sensitivity_trained.csv").unlink()
    shutil.rmtree(unit_folder(cfg, tmp_path, 2, 0))
    third = run(cfg, tmp_path, progress=False)
    assert sorted(third.units_run) == [(1, 0), (2, 0)]
    cols = ["stride", "seed", "state", "layer", "D", "G", "R", "D_se", "G_se", "R_se"]
    pd.testing.assert_frame_equal(third.sensitivity[cols], first.sensitivity[cols])

    # A folder of the earlier layout (units/s{s}-seed{seed}/ with train/, init.csv,
    # trained.csv, unit.json) is adopted: its training moves into the unit's run folder and
    # is measured there, not repeated; the tables are the same.
    import os

    for s in (1, 2):
        new, old = unit_folder(cfg, tmp_path, s, 0), root / "units" / f"s{s}-seed0"
        old.mkdir(parents=True)
        os.replace(new / "train", old / "train")
        (old / "unit.json").write_text("{}")
        shutil.rmtree(new)
    metrics = (root / "units" / "s2-seed0" / "train" / "metrics.jsonl").read_bytes()
    adopted = run(cfg, tmp_path, progress=False)
    assert not (root / "units").exists()
    assert (unit_folder(cfg, tmp_path, 2, 0) / "train" / "metrics.jsonl").read_bytes() == metrics
    pd.testing.assert_frame_equal(adopted.sensitivity[cols], first.sensitivity[cols])

    # More seeds: same run folder (the hash leaves the seeds out), old units re-used.
    more = run(_tiny(seeds=(0, 1)), tmp_path, progress=False)
    assert more.out_dir == root
    assert sorted(more.units_skipped) == [(1, 0), (2, 0)]
    assert sorted(more.units_run) == [(1, 1), (2, 1)]
    summary = json.loads((root / "summary.json").read_text())
    assert summary["config"]["seeds"] == [0, 1] and len(summary["units"]) == 4

    # The figure (edge module) draws from the saved tables.
    from diffeosense.experiments.scale_detection import load_result
    from diffeosense.plots.scale_detection import save_result_figure

    png = save_result_figure(load_result(root))
    assert png.exists() and png.stat().st_size > 10_000
    # Each table carries its sidecar (rows, hash): a truncated table is refused, by name.
    agg_csv = root / "aggregate.csv"
    good = agg_csv.read_bytes()
    agg_csv.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=rf"{agg_csv} does not match its sidecar"):
        load_result(root)
    agg_csv.write_bytes(good)

    # The CLI with the same config re-uses everything and prints the exponent table.
    from diffeosense.cli import main

    sets = ["preset=\"tiny\"", "size=16", "xi=4", "train_size=24", "depths=[3,3]", "width=4",
            "epochs=3", "measure_batch_size=64"]
    assert main(["scale-detection", "--preset", "lazy", "--out", str(tmp_path), "--seeds", "2",
                 "--no-progress", "--no-plot", "--set", *sets]) == 0


def test_compare_activations_table_carries_its_sidecar(tmp_path, capsys):
    """``--compare-activations`` writes activations_exponents.csv through write_table: both
    runs' exponents, a sidecar naming them; truncated or edited, the table is refused."""
    from _tables import assert_tampering_refused

    from diffeosense._io import read_table
    from diffeosense.cli import main

    sets = ["preset=\"tiny\"", "size=16", "xi=4", "train_size=24", "depths=[3,3]", "width=4",
            "epochs=2", "measure_batch_size=64"]
    assert main(["scale-detection", "--preset", "lazy", "--out", str(tmp_path),
                 "--compare-activations", "--no-progress", "--no-plot", "--set", *sets]) == 0
    path = tmp_path / "activations_exponents.csv"
    assert f"table: {path}" in capsys.readouterr().out
    table, meta = assert_tampering_refused(path, read_table)
    assert meta["activations"] == ["relu", "tanh"] and meta["config"]["epochs"] == 2
    assert sorted(set(table.activation)) == ["relu", "tanh"]
    for act, folder in zip(meta["activations"], meta["runs"], strict=True):
        own = read_table(f"{folder}/exponents.csv")[0]
        mine = table[table.activation == act].drop(columns=["activation", "run"])
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), own[list(mine.columns)])


def test_fit_exponents_recovers_known_laws():
    # Synthetic curves with exact laws: s = 1 power laws, s = 2 exponential laws.
    cfg = preset("lazy", depths=(8, 6), seeds=(0, 1))
    rows = []
    for s, L in ((1, 8), (2, 6)):
        for seed in (0, 1):
            for state in ("init", "trained"):
                for k in range(1, L + 1):
                    c = 1.0 + 0.5 * seed
                    if s == 1:
                        D, G = c * 3.0 / k, c * 0.2 * k**0.5
                    else:
                        D, G = c * 2.0**-k, c * 0.1 * 2.0**k
                    rows.append({"stride": s, "seed": seed, "state": state, "k": float(k),
                                 "layer": f"features.act{k}", "D": D, "G": G, "R": D / G})
    sens = pd.DataFrame(rows)
    agg = sens.groupby(["stride", "state", "layer", "k"], as_index=False)[["D", "G", "R"]].agg(
        lambda v: float(np.exp(np.log(v).mean())))
    ex = fit_exponents(cfg, sens, agg, theory_table(cfg))
    for r in ex.itertuples():
        assert r.slope == pytest.approx(r.predicted, abs=1e-12), r
        assert r.seed_mean == pytest.approx(r.predicted, abs=1e-12)
        assert r.n_seeds == 2 and r.k_min == 2
    # The exact idealized net at N = 64 is set beside them (the stride-2 net up to k = 5).
    th = theory_table(cfg)
    assert th[th.stride == 2].k.max() == 5 and th[th.stride == 1].k.max() == 8
    d = th[th.stride == 2].D.to_numpy()
    k = np.arange(1, 6)
    np.testing.assert_allclose(d, 2.0**-k / (1 - 2.0**k / 64), rtol=1e-12)


@pytest.mark.parametrize("kw, msg", [
    (dict(strides=(1, 3)), "strides must be 1 or filter_size"),
    (dict(depths=(4,)), "one depth per stride"),
    (dict(depths=(8, 7)), "needs N >= 128"),
    (dict(seeds=()), "at least one seed"),
    (dict(init="xavier"), "init must be one of"),
    (dict(train_size=5000), "too large"),
    (dict(parametrization="mup"), "parametrization must be one of"),
    (dict(readout="wide"), "readout must be one of"),
    (dict(parametrization="ntk", init="kaiming"), "does not fit the ntk"),
    (dict(lr_scaling="sqrt"), "lr_scaling must be one of"),
])
def test_bad_configs_raise_clear_errors(kw, msg, tmp_path):
    with pytest.raises(ValueError, match=msg):
        cfg = preset("lazy", **kw)
        run(cfg, tmp_path, progress=False)


def test_unknown_preset_and_fields():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="unknown ScaleDetectionExperiment keys"):
        ScaleDetectionExperiment.from_dict({"sizes": 3})
    cfg = preset("small")
    assert ScaleDetectionExperiment.from_dict(cfg.to_dict()) == cfg


def test_presets_state_the_regime():
    small, lazy, paper = preset("small"), preset("lazy"), preset("paper")
    assert (small.parametrization, small.readout, small.lr_scaling) == ("ntk", "mean-field",
                                                                        "width")
    assert small.lr_effective == pytest.approx(0.01 * small.width)
    assert small.resolved()["lr_effective"] == pytest.approx(1.28)
    assert small.data_config().value == pytest.approx(math.sqrt(small.size / 2))
    assert (lazy.parametrization, lazy.lr_effective) == ("standard", 0.01)
    assert paper.width == 1000 and len(paper.seeds) == 10 and paper.task == small.task
    assert preset("small", task="distance", gap=2).task == "distance"  # both tasks selectable
    # The train config carries the resolved learning rate and the regime.
    tcfg = small.train_config(2, seed=1)
    assert tcfg.lr == pytest.approx(1.28) and tcfg.model_kwargs["readout"] == "mean-field"
    assert tcfg.model_kwargs["init_seed"] != small.train_config(2, seed=0).model_kwargs[
        "init_seed"]


def test_balanced_probes():
    from diffeosense.probes import balanced_probes

    y = torch.tensor([1.0, 1, 1, 1, -1, 1, -1, -1])
    x = torch.arange(8.0)
    assert balanced_probes(x, y, 4).tolist() == [0.0, 4.0, 1.0, 6.0]
    assert balanced_probes(x, y, None).tolist() == [0.0, 4.0, 1.0, 6.0, 2.0, 7.0]


def test_feature_learning_regime_moves_the_slopes(tmp_path):
    """A tiny instance of the feature-learning regime (NTK convolutions, mean-field readout,
    lr 0.01 H, block task, stride 2): after training, and not at initialization, D_k falls
    and G_k rises with depth. Measured here: slopes per layer (2 seeds) D -0.00 -> -0.21,
    G +0.01 -> +0.20 (3 seeds, s.e. <= 0.04); the margins asked are a third of that."""
    cfg = preset("small", size=64, xi=16, amplitude=math.sqrt(32), train_size=256, width=32,
                 depths=(6,), n_probes=None, epochs=60, seeds=(0, 1))
    res = run(cfg, tmp_path, progress=False)
    assert all(u["stopped"] == "zero_loss" for u in res.units)
    ex = res.exponents[res.exponents.view == "full"].set_index(["state", "quantity"])
    d_init, d_trained = ex.loc[("init", "D"), "seed_mean"], ex.loc[("trained", "D"), "seed_mean"]
    g_init, g_trained = ex.loc[("init", "G"), "seed_mean"], ex.loc[("trained", "G"), "seed_mean"]
    assert d_trained < d_init - 0.07, (d_init, d_trained)
    assert g_trained > g_init + 0.07, (g_init, g_trained)
    assert ex.loc[("trained", "R"), "seed_mean"] < -0.15


def test_a_failing_unit_is_named_and_the_others_kept(tmp_path):
    """The units are sweep runs: one that raises leaves its traceback in its run folder and
    is named; the other unit finishes and is not trained again by the next call."""
    from diffeosense.experiments.run import run_status

    cfg = _tiny()
    bad = unit_folder(cfg, tmp_path, 1, 0)
    bad.mkdir(parents=True)
    (bad / "train").write_text("not a folder")  # the unit's training cannot start
    with pytest.raises(RuntimeError, match=r"1 unit\(s\).*stride 1 seed 0 .*error.txt"):
        run(cfg, tmp_path, progress=False, workers=1)
    assert run_status(bad) == "failed" and (bad / "error.txt").read_text()
    assert run_status(unit_folder(cfg, tmp_path, 2, 0)) == "done"


def _unit(cfg, root, stride, seed):
    """The run folder of unit (stride, seed) in the experiment folder ``root``."""
    c = next(c for c in run_configs(cfg)
             if (c.train.model_kwargs["stride"], c.train.seed) == (stride, seed))
    return run_dir(c, root / "runs")


_UNIT_KEYS = {"stride", "seed", "model_kwargs", "lr", "epochs_run", "stopped", "train_loss",
              "train_error", "test_error", "n_probes", "train_seconds", "seconds_this_call", "run"}


def _direct_unit_tables(cfg, folder, stride, seed):
    """What the experiment computed before its units were sweep runs, called here directly on
    the unit's checkpoints: ``measure`` with ``ActivePixelMove``, balanced probes, the full
    and channel-mean views, saved and read back as CSV (the unit's tables went that way)."""
    from diffeosense.data.scale_detection import ActivePixelMove, make_scale_detection
    from diffeosense.probes import balanced_probes
    from diffeosense.sensitivity import SensitivityResult
    from diffeosense.train import load_checkpoint

    data = make_scale_detection(cfg.data_config())
    probes = balanced_probes(data.x_test, data.y_test, cfg.n_probes)
    move = ActivePixelMove(cfg.data_config(), label_preserving=True, boundary="clip")
    out = {}
    for state, name in (("init", "init.pt"), ("trained", "last.pt")):
        model, _, _ = load_checkpoint(folder / "train" / "checkpoints" / name)
        res = measure(model, probes, layers="all", perturbation=move, n_probes=len(probes),
                      batch_size=cfg.measure_batch_size, seed=seed,
                      noise_match=cfg.noise_match, denominator=cfg.denominator,
                      channels=True, device="cpu")
        table = res.table[res.table.view.isin(["full", "channel-mean"])].reset_index(drop=True)
        path = folder.parent.parent / f"direct-s{stride}-seed{seed}-{state}.csv"
        SensitivityResult(table, res.config, res.provenance).save(path)
        out[state] = SensitivityResult.load(path).to_frame()
    return out


def test_units_are_the_direct_measurement_bit_for_bit(tmp_path):
    """Each unit's tables are exactly (check_exact) measure() on its checkpoints as the
    experiment called it before the sweep engine; the unit's move spec builds that move."""
    from diffeosense.data.scale_detection import ActivePixelMove, make_scale_detection
    from diffeosense.experiments.run import load_run
    from diffeosense.perturbations import as_perturbation

    cfg = _tiny(n_probes=16, seeds=(0, 1), strides=(2,), depths=(3,))
    res = run(cfg, tmp_path, progress=False, workers=1)
    assert {k for u in res.units for k in u} == _UNIT_KEYS
    for c in run_configs(cfg):
        spec = as_perturbation(c.perturbation)
        old = ActivePixelMove(cfg.data_config(), label_preserving=True, boundary="clip")
        assert (spec.label_preserving, spec.boundary) == (True, "clip")
        x = make_scale_detection(cfg.data_config()).x_test[:64]
        a = spec.sample(x, torch.Generator().manual_seed(5))
        b = old.sample(x, torch.Generator().manual_seed(5))
        assert torch.equal(a.old, b.old) and torch.equal(a.new, b.new)
        assert torch.equal(spec.apply(x, a), old.apply(x, b))
        folder = run_dir(c, res.out_dir / "runs")
        stride, seed = c.train.model_kwargs["stride"], c.train.seed
        direct = _direct_unit_tables(cfg, folder, stride, seed)
        tables = load_run(folder)["tables"]
        for state in ("init", "trained"):
            pd.testing.assert_frame_equal(tables[state].to_frame(), direct[state],
                                          check_exact=True)
            tidy = res.sensitivity[(res.sensitivity.seed == seed)
                                   & (res.sensitivity.state == state)]
            np.testing.assert_array_equal(tidy.D.to_numpy(), direct[state].D.to_numpy())
        assert not (direct["init"].view == "channel").any()


def test_parallel_units_equal_sequential(tmp_path):
    """Two pool workers give the bytes of one unit after the other in this process. The pool
    gives each worker ``cores // workers`` threads, and a CPU reduction's last bits depend on
    the thread count, so the sequential run is held at that count (1 thread on 2 cores)."""
    from diffeosense.experiments.backends import usable_cores

    cfg = _tiny(seeds=(0, 1), strides=(2,), depths=(3,))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, usable_cores() // 2))
    try:
        one = run(cfg, tmp_path / "one", progress=False, workers=1)
    finally:
        torch.set_num_threads(threads)
    two = run(cfg, tmp_path / "two", progress=False, workers=2)
    assert sorted(two.units_run) == [(2, 0), (2, 1)]
    for name in ("sensitivity", "aggregate", "theory", "exponents"):
        assert (one.out_dir / f"{name}.csv").read_bytes() == \
            (two.out_dir / f"{name}.csv").read_bytes(), name
