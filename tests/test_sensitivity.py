"""The sensitivity engine against closed forms, brute force, and its own invariances."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from diffeosense import sensitivity
from diffeosense._stats import BlockMoments, StreamingMoments, pairwise_denominator
from diffeosense.sensitivity import SensitivityResult, aggregate, measure


class Roll:
    """Circular translation by a fixed number of pixels: deterministic, mean-preserving."""

    name = "roll"

    def __init__(self, shift: int = 1):
        self.shift = shift

    def sample(self, x, generator):
        return torch.full((x.shape[0],), self.shift)

    def apply(self, x, params):
        return torch.stack([torch.roll(xi, int(s), dims=-1) for xi, s in zip(x, params,
                                                                            strict=True)])


class RandomRoll(Roll):
    """A random shift per probe, drawn from the generator."""

    def sample(self, x, generator):
        return torch.randint(-3, 4, (x.shape[0],), generator=generator)


class Flat(nn.Module):
    """f(x) = W vec(x) (no bias), or the identity when W is None."""

    def __init__(self, W=None):
        super().__init__()
        self.W = None if W is None else nn.Parameter(W, requires_grad=False)

    def forward(self, x):
        x = x.flatten(1)
        return x if self.W is None else x @ self.W.T


class GAP(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def small_cnn():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def images(n, c=1, side=16, seed=0):
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed))


def full(res):
    return res.to_frame("full").set_index("layer")


# ----------------------------------------------------------------- closed forms
def test_identity_model_D_equals_G_and_closed_form(dtype):  # conftest: float32, float64
    # float32 representations: per-probe norms and the denominator's shifted sums accumulate
    # in float32 (~1e-8 relative here, a few 1e-6 documented for 65536 components), float64
    # ones in float64; the running sums across probes are float64 either way.
    x = images(40).to(dtype)
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    res = measure(Flat(), x, layers=["input", "output"], perturbation=Roll(1), n_probes=40,
                  batch_size=16)
    df = full(res)
    dx = (torch.roll(x, 1, dims=-1) - x).flatten(1).double()
    den = pairwise_denominator(x.flatten(1), include_diag=False).item()
    D_closed = dx.pow(2).sum(1).mean().item() / den
    for layer in ("input", "output"):
        assert df.loc[layer, "D"] == pytest.approx(D_closed, rel=rtol)
        # Norm-matched noise: ||x + eta - x|| = ||tau x - x|| per probe, up to rounding of x.
        assert df.loc[layer, "G"] == pytest.approx(df.loc[layer, "D"], rel=100 * rtol)
        assert df.loc[layer, "R"] == pytest.approx(1.0, rel=100 * rtol)
        assert df.loc[layer, "denominator"] == pytest.approx(den, rel=rtol / 100)


def test_identity_with_default_diffeo_R_is_one():
    res = measure(Flat(), images(24, c=3, side=16), layers=["input"], n_probes=24, batch_size=7)
    row = res["input"]
    assert row.R == pytest.approx(1.0, rel=1e-5)
    assert row.D > 0


def test_linear_model_closed_forms():
    d, k, N = 64, 5, 300
    W = torch.randn(k, d, generator=torch.Generator().manual_seed(1))
    x = images(N, side=8)
    res = measure(Flat(W), x, layers=["output"], perturbation=Roll(1), n_probes=N,
                  batch_size=64)
    row = res["output"]
    dx = (torch.roll(x, 1, dims=-1) - x).flatten(1).double()
    Wd = W.double()
    den = pairwise_denominator(x.flatten(1).double() @ Wd.T, include_diag=False).item()
    assert row.denominator == pytest.approx(den, rel=1e-5)
    # D is deterministic here: mean ||W (tau x - x)||^2 / den.
    assert row.D == pytest.approx((dx @ Wd.T).pow(2).sum(1).mean().item() / den, rel=1e-5)
    # Isotropic noise of norm ||tau x - x||: E ||W eta||^2 = ||tau x - x||^2 tr(W^T W) / d.
    G_expected = dx.pow(2).sum(1).mean().item() * Wd.pow(2).sum().item() / d / den
    assert row.G == pytest.approx(G_expected, rel=0.06)
    assert abs(row.G - G_expected) < 4 * row.G_se


def test_global_average_pooling_kills_D_and_divides_G_by_pixels():
    # Images that vary mostly as a whole (brightness) plus a little pixel noise: the spread
    # between images survives the average while norm-matched white noise is averaged away.
    N, side = 400, 8
    g = torch.Generator().manual_seed(6)
    x = torch.rand(N, 1, 1, 1, generator=g) + 0.05 * torch.rand(N, 1, side, side, generator=g)
    ident = measure(Flat(), x, layers=["output"], perturbation=Roll(2), n_probes=N,
                    batch_size=100)["output"]
    gap = measure(GAP(), x, layers=["output"], perturbation=Roll(2), n_probes=N,
                  batch_size=100)["output"]
    assert gap.D < 1e-9 * ident.D  # a circular translation keeps the mean exactly
    assert gap.G / ident.G == pytest.approx(1 / side**2, rel=0.3)


# ----------------------------------------------------------------- denominator
@pytest.mark.parametrize("include_diag", [True, False])
def test_streaming_moments_equal_cdist(include_diag):
    f = torch.randn(37, 3, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = f * 5 + 100  # a large mean: the shifted sums must not cancel catastrophically
    brute = pairwise_denominator(f.flatten(1), include_diag)
    per_group = torch.stack([pairwise_denominator(f[:, g], include_diag) for g in range(3)])
    for bs in (1, 4, 10, 37):
        s = StreamingMoments()
        for chunk in f.split(bs):
            s.update(chunk)
        got = s.pair_mean(include_diag)
        torch.testing.assert_close(got, per_group, rtol=1e-9, atol=0)
        assert got.sum().item() == pytest.approx(brute.item(), rel=1e-9)
    N = f.shape[0]
    assert pairwise_denominator(f, True).item() == pytest.approx(
        pairwise_denominator(f, False).item() * (N - 1) / N, rel=1e-12)


@pytest.mark.parametrize("sizes", [[37], [1] * 37, [4, 9, 1, 23], [10, 10, 10, 7], [13, 24]])
def test_block_moments_equal_brute_force_per_block_whatever_the_updates(sizes):
    f = torch.randn(37, 3, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = f * 5 + 100  # a large mean: the shifted sums must not cancel catastrophically
    bm = BlockMoments(block=10)
    for chunk in f.split(sizes):
        bm.update(chunk)
    blocks = bm.block_pair_means()
    assert len(blocks) == 3  # the open block of 7 rows is left out
    for k, got in enumerate(blocks):
        ref = torch.stack([pairwise_denominator(f[10 * k:10 * k + 10, g], False)
                           for g in range(3)])
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=0)
    per_group = torch.stack([pairwise_denominator(f[:, g], False) for g in range(3)])
    torch.testing.assert_close(bm.moments().pair_mean(False), per_group, rtol=1e-9, atol=0)
    torch.testing.assert_close(bm.moments().mean, f.mean(0), rtol=1e-12, atol=0)


def test_block_moments_in_float32_are_accurate_to_what_the_docs_say():
    # float32 rows of a wide layer with a mean 4x its spread: the reductions run in float32
    # (documented: a relative error of a few 1e-6), against float64 brute force.
    g = torch.Generator().manual_seed(0)
    f = (torch.randn(120, 1, 20000, generator=g) + 4).float()
    bm = BlockMoments(block=50)
    for chunk in f.split(16):
        bm.update(chunk)
    ref = pairwise_denominator(f[:, 0].double(), False)
    assert bm.moments().pair_mean(False).item() == pytest.approx(ref.item(), rel=2e-5)
    for k, got in enumerate(bm.block_pair_means()):
        ref = pairwise_denominator(f[50 * k:50 * k + 50, 0].double(), False)
        assert got.item() == pytest.approx(ref.item(), rel=2e-5)


def test_results_do_not_depend_on_the_reduction_chunks(monkeypatch):
    # The reductions walk each layer in chunks of CHUNK_BYTES; one probe per chunk (chunks
    # crossing the blocks of se_block probes at other places) changes nothing but rounding.
    x = images(23)
    net = small_cnn()
    kw = dict(n_probes=23, batch_size=10, seed=3, se_block=4, channels=True)
    ref = measure(net, x, **kw).to_frame()
    monkeypatch.setattr(sensitivity, "CHUNK_BYTES", 1)
    got = measure(net, x, **kw).to_frame()
    cols = ["D", "G", "R", "D_se", "G_se", "R_se", "denominator"]
    np.testing.assert_allclose(got[cols], ref[cols], rtol=1e-6)


def test_reduced_precision_models_are_measured_in_float32():
    # A bfloat16 model: its representations are reduced in float32 (not in bfloat16, whose
    # 8-bit mantissa would lose the small differences), so it agrees with its float32 self
    # up to the model's own rounding.
    x = images(40)
    net = small_cnn()
    ref = full(measure(net, x, n_probes=40, batch_size=16, seed=1))
    got = full(measure(net.to(torch.bfloat16), x.to(torch.bfloat16), n_probes=40,
                       batch_size=16, seed=1))
    for q in ("D", "G", "R"):
        np.testing.assert_allclose(got[q], ref[q], rtol=0.1)


@pytest.mark.parametrize("batch_size", [1, 5, 30])
def test_measure_denominator_conventions_match_brute_force(batch_size):
    x = images(30)
    for conv, incl in (("streaming", False), ("pairs-excl-diag", False),
                       ("pairs-incl-diag", True)):
        res = measure(Flat(), x, layers=["input"], perturbation=Roll(), n_probes=30,
                      batch_size=batch_size, denominator=conv, se_block=7)
        brute = pairwise_denominator(x.flatten(1), include_diag=incl).item()
        # float32 images: the shifted sums run in float32 (a few 1e-8 here), then float64
        assert res["input"].denominator == pytest.approx(brute, rel=1e-7)


# ----------------------------------------------------------------- determinism, modes
def test_results_do_not_depend_on_batch_size_or_repeat():
    x = images(20)
    net = small_cnn()
    runs = [measure(net, x, n_probes=20, batch_size=bs, seed=3).to_frame()
            for bs in (3, 8, 20)]
    for df in runs[1:]:
        assert list(df.layer) == list(runs[0].layer)
        np.testing.assert_allclose(df[["D", "G", "R"]], runs[0][["D", "G", "R"]], rtol=2e-5)
    again = measure(net, x, n_probes=20, batch_size=3, seed=3).to_frame()
    np.testing.assert_array_equal(again[["D", "G"]], runs[0][["D", "G"]])
    other = measure(net, x, n_probes=20, batch_size=3, seed=4).to_frame()
    assert not np.allclose(other.D, runs[0].D)
    # Identity model: no batched kernels at all; what batch size changes is the float32
    # rounding of the denominator's column sums over a batch's rows (a few 1e-9 here).
    a = measure(Flat(), x, layers=["input"], perturbation=RandomRoll(), n_probes=20,
                batch_size=1, seed=5)
    b = measure(Flat(), x, layers=["input"], perturbation=RandomRoll(), n_probes=20,
                batch_size=20, seed=5)
    np.testing.assert_allclose(a.to_frame()[["D", "G"]], b.to_frame()[["D", "G"]], rtol=1e-7)


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_measure_on_device_matches_cpu(device, statistic):  # conftest: cpu, and cuda if present
    x = images(12).double()
    net = small_cnn().double()
    kw = dict(n_probes=12, batch_size=5, seed=2, channels=True, statistic=statistic)
    ref = measure(net, x, **kw).to_frame()
    got = measure(net, x, device=device, **kw).to_frame()
    assert next(net.parameters()).device.type == "cpu"  # moved back after the measurement
    assert list(got.layer) == list(ref.layer)
    np.testing.assert_allclose(got[["D", "G", "R", "D_se", "G_se"]],
                               ref[["D", "G", "R", "D_se", "G_se"]], rtol=1e-6)


def test_generator_gives_replayable_seed():
    x = images(12)
    r1 = measure(small_cnn(), x, n_probes=12, generator=torch.Generator().manual_seed(9))
    r2 = measure(small_cnn(), x, n_probes=12, seed=r1.config["seed"])
    np.testing.assert_array_equal(r1.to_frame().D, r2.to_frame().D)


def test_model_mode_and_parameters_restored():
    net = small_cnn().train()
    net[1].eval()  # a mixed configuration must survive too
    before = {k: v.clone() for k, v in net.state_dict().items()}
    measure(net, images(10), n_probes=10, batch_size=4)
    assert net.training and net[0].training and not net[1].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats untouched: eval mode was used


def test_fx_and_hooks_give_same_numbers():
    x = images(16)
    a = full(measure(small_cnn(), x, n_probes=16, batch_size=8, method="fx"))
    b = full(measure(small_cnn(), x, n_probes=16, batch_size=8, method="hooks"))
    assert a.index.tolist() == b.index.tolist() == ["input"] + [str(i) for i in range(9)] + [
        "output"]  # a Sequential of modules: both paths see the same nodes
    np.testing.assert_allclose(a[["D", "G", "R"]], b[["D", "G", "R"]], rtol=1e-6)


# ----------------------------------------------------------------- views, statistics, errors bars
def test_channel_views_match_manual_computation():
    x = images(30, c=2)
    res = measure(Flat(), x, layers=["input"], perturbation=Roll(1), n_probes=30,
                  batch_size=7, channels=True)
    df = res.to_frame()
    dx = (torch.roll(x, 1, dims=-1) - x).double()
    chan = df[df.view == "channel"].set_index("channel")
    assert sorted(chan.index) == [0, 1]
    for c in range(2):
        den = pairwise_denominator(x[:, c].flatten(1), False).item()
        num = dx[:, c].pow(2).sum((1, 2)).mean().item()
        assert chan.loc[c, "D"] == pytest.approx(num / den, rel=1e-6)
    assert chan.num_D.sum() == pytest.approx(res["input"].num_D, rel=1e-12)
    cm = df[df.view == "channel-mean"].iloc[0]
    m = x.mean(1)
    den = pairwise_denominator(m.flatten(1), False).item()
    num = (torch.roll(m, 1, dims=-1) - m).double().pow(2).sum((1, 2)).mean().item()
    assert cm.D == pytest.approx(num / den, rel=1e-6)
    assert cm["size"] == 16 * 16 and res["input"]["size"] == 2 * 16 * 16


def test_median_statistic():
    x = images(25)
    res = measure(Flat(), x, layers=["input"], perturbation=Roll(1), n_probes=25,
                  statistic="median")
    per = (torch.roll(x, 1, dims=-1) - x).double().pow(2).flatten(1).sum(1)
    assert res["input"].num_D == pytest.approx(per.median().item(), rel=1e-6)
    assert res["input"].D_se > 0


def test_standard_errors_match_spread_over_probe_sets():
    pool = images(2000, side=6, seed=11)
    W = torch.randn(3, 36, generator=torch.Generator().manual_seed(4))
    Ds, Gs, Rs, ses = [], [], [], []
    for s in range(20):
        r = measure(Flat(W), pool[s * 100:(s + 1) * 100], layers=["output"],
                    perturbation=RandomRoll(), n_probes=100, batch_size=100, seed=s,
                    se_block=20)["output"]
        Ds.append(r.D), Gs.append(r.G), Rs.append(r.R)
        ses.append((r.D_se, r.G_se, r.R_se))
    ses = np.array(ses).mean(0)
    for vals, se in zip((Ds, Gs, Rs), ses, strict=True):
        assert 0.5 < np.std(vals, ddof=1) / se < 2.0


# ----------------------------------------------------------------- bad input
def test_bad_input_messages():
    net = small_cnn()
    with pytest.raises(ValueError, match=r"shape \(4, 3, 16, 16\).*expects 1 input channels"):
        measure(net, images(4, c=3), n_probes=4)
    with pytest.raises(ValueError, match="unknown layer.*Valid layers: input, 0, 1"):
        measure(net, images(4), layers=["nope"], n_probes=4)
    with pytest.raises(ValueError, match="n_probes must be >= 2"):
        measure(net, images(4), n_probes=1)
    with pytest.raises(ValueError, match="only 1 probe"):
        measure(net, images(1), n_probes=4)
    with pytest.raises(ValueError, match="denominator must be"):
        measure(net, images(4), n_probes=4, denominator="cdist")

    class Blowup(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.log = nn.Identity()

        def forward(self, x):
            return self.log(torch.log(self.conv(x) * 0 - 1)).flatten(1)  # NaN

    with pytest.raises(ValueError, match="layer 'log' has NaN or Inf values on the clean"):
        measure(Blowup(), images(4), n_probes=4, layers=["log"], method="hooks")

    class NanShift(Roll):  # a perturbation that breaks only the deformed stream
        def apply(self, x, params):
            return x * float("nan")

    with pytest.raises(ValueError, match="layer '0' has NaN or Inf values on the deformed"):
        measure(net, images(4), n_probes=4, perturbation=NanShift(), layers=["0", "1"])


def test_constant_representation_gives_nan_with_warning():
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.zero = nn.Conv2d(1, 2, 3)
            nn.init.zeros_(self.zero.weight)
            nn.init.constant_(self.zero.bias, 0.3)

        def forward(self, x):
            return self.zero(x).flatten(1)

    with pytest.warns(UserWarning, match="constant over the probes at layer.*zero"):
        res = measure(Const(), images(10), perturbation=Roll(), n_probes=10)
    row = res["zero"]
    assert math.isnan(row.D) and math.isnan(row.G)
    assert res["input"].D > 0


def test_dataset_and_loader_inputs_give_same_result():
    x = images(21)
    y = torch.zeros(21, dtype=torch.long)
    ds = torch.utils.data.TensorDataset(x, y)
    ref = measure(small_cnn(), x, n_probes=17, batch_size=5).to_frame()
    for data in ((x, y), ds, torch.utils.data.DataLoader(ds, batch_size=4)):
        got = measure(small_cnn(), data, n_probes=17, batch_size=5).to_frame()
        np.testing.assert_array_equal(got.D, ref.D)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = measure(small_cnn(), x, n_probes=50, batch_size=8)
    assert r.to_frame().n_probes.iloc[0] == 21 and any("only 21" in str(m.message) for m in w)


# ----------------------------------------------------------------- saving, aggregation
@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_save_load_roundtrip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    res = measure(small_cnn(), images(10), n_probes=10, channels=True, meta={"model": "cnn"})
    path = res.save(tmp_path / f"result{suffix}")
    back = SensitivityResult.load(path)
    a, b = res.to_frame(), back.to_frame()
    assert list(a.columns) == list(b.columns)
    np.testing.assert_allclose(a[["D", "G", "R", "D_se"]], b[["D", "G", "R", "D_se"]],
                               rtol=1e-12)
    assert list(a.layer) == list(b.layer) and list(a.view) == list(b.view)
    assert back.config["seed"] == res.config["seed"] and back.config["model"] == "cnn"
    assert back.provenance["torch"] == torch.__version__
    if suffix != ".json":
        assert (tmp_path / "result.meta.json").exists()
    with pytest.raises(ValueError, match="unknown result format"):
        res.save(tmp_path / "result.txt")
    with pytest.raises(FileNotFoundError):
        SensitivityResult.load(tmp_path / "missing.csv")


def test_aggregate_geometric_means():
    runs = [measure(small_cnn(), images(12), n_probes=12, seed=s) for s in range(3)]
    agg = aggregate(runs).to_frame("full").set_index("layer")
    Ds = np.stack([r.to_frame("full").set_index("layer").loc[agg.index, "D"] for r in runs])
    np.testing.assert_allclose(agg.D, np.exp(np.log(Ds).mean(0)), rtol=1e-12)
    np.testing.assert_allclose(agg.D_se, agg.D * np.log(Ds).std(0, ddof=1) / np.sqrt(3),
                               rtol=1e-9)
    assert (agg.n_probes == 36).all()


@pytest.mark.parametrize("int_dtype", [torch.uint8, torch.int32, torch.bool])
def test_non_floating_images_are_a_clear_error(int_dtype):
    """Not the misleading 'expects 1 input channels' of the first conv."""
    from diffeosense.models import create_model

    net = create_model("simplecnn", in_channels=1, num_classes=2, depth=1, width=4)
    x = torch.ones(8, 1, 12, 12, dtype=int_dtype)
    with pytest.raises(ValueError, match=f"floating-point inputs .*got dtype {int_dtype}"):
        measure(net, x, n_probes=4)


def test_tables_that_do_not_match_their_sidecar_are_refused(tmp_path):
    """A truncated or edited table, another result's sidecar, no sidecar: each refused with
    the file named (a truncated CSV used to plot 9 of 14 layers without a word)."""
    import shutil

    res = measure(small_cnn(), images(10), n_probes=10, channels=True)
    path = res.save(tmp_path / "r.csv")
    side = tmp_path / "r.meta.json"
    good = path.read_bytes()
    lines = good.decode().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))  # truncated
    with pytest.raises(ValueError, match=rf"{path} does not match its sidecar {side} \("
                       rf"{len(lines) - 4} rows in the table, {len(lines) - 1} in the sidecar"):
        SensitivityResult.load(path)
    edited = lines[1].replace("0", "1", 1)  # one digit of the first row changed
    assert edited != lines[1]
    path.write_text("".join([lines[0], edited, *lines[2:]]))
    with pytest.raises(ValueError, match="content hash differs"):
        SensitivityResult.load(path)
    path.write_bytes(good)
    assert len(SensitivityResult.load(path).table) == len(res.table)
    other = measure(small_cnn(), images(10), n_probes=10, seed=1).save(tmp_path / "o.csv")
    shutil.copy(tmp_path / "o.meta.json", side)  # another result's sidecar
    with pytest.raises(ValueError, match=r"it describes 'o.csv'"):
        SensitivityResult.load(path)
    side.unlink()
    with pytest.raises(FileNotFoundError, match="has no sidecar r.meta.json"):
        SensitivityResult.load(path)
    j = res.save(tmp_path / "r.json")
    j.write_text(j.read_text()[:-200])
    with pytest.raises(ValueError, match=r"r.json is not valid JSON \(truncated\?\)"):
        SensitivityResult.load(j)
    assert SensitivityResult.load(other).config["seed"] == 1


# ----------------------------------------------------------------- the published conventions
def _streams(perturbation, x, seed, probe_noise=0.0):
    """Replay the three streams (x, tau x, x + eta) that measure(..., seed=seed) uses."""
    from diffeosense.sensitivity import _Perturber

    return _Perturber(perturbation, seed, "sample", False, probe_noise)(x, 0)


def test_component_median_matches_brute_force():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(192, 5))
    x = images(25, side=8, seed=4)  # odd: the median is one value per component
    res = measure(net, x, layers=["1", "output"], perturbation=RandomRoll(), n_probes=25,
                  batch_size=6, seed=9, statistic="component-median", channels=True)
    x0, xt, xe = _streams(RandomRoll(), x, 9)
    with torch.no_grad():
        reps = {"1": net[:2], "output": net}
        for name, f in reps.items():
            f0, ft, fe = (f(s).flatten(1).double().numpy() for s in (x0, xt, xe))
            for stream, col in ((ft, "num_D"), (fe, "num_G")):
                sq = (stream - f0) ** 2
                brute = sum(float(np.median(sq[:, j])) for j in range(sq.shape[1]))
                per_probe_median = float(np.median(sq.sum(1)))
                assert res[name][col] == pytest.approx(brute, rel=1e-5)
                assert abs(brute - per_probe_median) > 1e-3 * brute  # not the other median
            den = 2 * f0.var(0, ddof=1).sum()
            assert res[name].D == pytest.approx(brute_d := res[name].num_D / den, rel=1e-5)
            assert brute_d > 0
        # per-channel rows: the same sum restricted to each channel's components
        f0, ft = (net[:2](s).double().numpy() for s in (x0, xt))
        df = res.to_frame("channel").set_index("channel")
        for c in range(3):
            sq = ((ft[:, c] - f0[:, c]) ** 2).reshape(25, -1)
            assert df.loc[c, "num_D"] == pytest.approx(np.median(sq, 0).sum(), rel=1e-5)
        cm = res.to_frame("channel-mean").iloc[0]
        sq = ((ft.mean(1) - f0.mean(1)) ** 2).reshape(25, -1)
        assert cm.num_D == pytest.approx(np.median(sq, 0).sum(), rel=1e-5)
    assert math.isnan(res["output"].D_se)  # documented: not estimated


def _bn_net():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 8 * 8, 6))
    bn = net[1]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 3.0)
    return net


def _by_hand(net, s, stats_from=None):
    """The net with its BatchNorm normalizing by the biased statistics of ``stats_from``
    (default: the stream ``s`` itself), computed here by hand."""
    conv, bn = net[0], net[1]
    h = conv(s)
    ref = conv(stats_from) if stats_from is not None else h
    mean = ref.mean((0, 2, 3), keepdim=True)
    var = ref.var((0, 2, 3), unbiased=False, keepdim=True)
    h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) \
        + bn.bias.view(1, -1, 1, 1)
    return h, net[4](net[3](torch.relu(h)))


def test_batchnorm_batch_equals_three_separately_normalized_streams():
    net = _bn_net()
    net.train()  # the mode measure found must come back, and running stats stay untouched
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = images(40, side=8, seed=2)
    res = measure(net, x, layers=["1", "output"], perturbation=RandomRoll(), n_probes=40,
                  batch_size=7, seed=5, batchnorm="batch")
    assert net.training and "forward" not in net[1].__dict__
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    x0, xt, xe = _streams(RandomRoll(), x, 5)
    with torch.no_grad():
        (b0, o0), (bt, ot), (be, oe) = (_by_hand(net, s) for s in (x0, xt, xe))
        mixed = torch.cat([x0, xt, xe])
        m0, mt = (_by_hand(net, s, stats_from=mixed)[1] for s in (x0, xt))
    for name, (f0, ft, fe) in {"1": (b0, bt, be), "output": (o0, ot, oe)}.items():
        f0, ft, fe = (t.flatten(1).double() for t in (f0, ft, fe))
        den = 2 * f0.var(0).sum()
        D = ((ft - f0) ** 2).sum(1).mean() / den
        G = ((fe - f0) ** 2).sum(1).mean() / den
        assert res[name].D == pytest.approx(D.item(), rel=1e-4)
        assert res[name].G == pytest.approx(G.item(), rel=1e-4)
        assert res[name].R == pytest.approx((D / G).item(), rel=1e-4)
    # The convention is a real choice: eval mode and one statistic over the three mixed
    # streams both give other numbers.
    ev = measure(net, x, layers=["output"], perturbation=RandomRoll(), n_probes=40, seed=5)
    assert abs(ev["output"].D / res["output"].D - 1) > 0.05
    m0, mt = m0.double(), mt.double()
    D_mixed = ((mt - m0) ** 2).sum(1).mean() / (2 * m0.var(0).sum())
    assert abs(D_mixed.item() / res["output"].D - 1) > 1e-3
    assert res.config["batchnorm"] == "batch" and res.config["batch_size"] == 40


def test_probe_noise_corrupts_each_probe_as_training_does():
    from diffeosense.data import gaussian_corruption
    from diffeosense.sensitivity import _probe_seed

    x = images(12, side=6)
    res = measure(Flat(), x, layers=["input"], perturbation=Roll(1), n_probes=12, batch_size=5,
                  seed=3, probe_noise=2.0)
    noisy = torch.cat([gaussian_corruption(x[i:i + 1], 2.0,
                                           torch.Generator().manual_seed(_probe_seed(3, i)))
                       for i in range(12)])
    assert torch.allclose((noisy - x).flatten(1).norm(dim=1), torch.full((12,), 2.0))
    num = (torch.roll(noisy, 1, dims=-1) - noisy).double().pow(2).flatten(1).sum(1).mean()
    assert res["input"].num_D == pytest.approx(num.item(), rel=1e-5)
    assert res["input"].denominator == pytest.approx(
        pairwise_denominator(noisy.flatten(1), False).item(), rel=1e-5)
    clean = measure(Flat(), x, layers=["input"], perturbation=Roll(1), n_probes=12, seed=3)
    assert res["input"].num_D > 1.5 * clean["input"].num_D  # the noise roughens the probes
    assert res.config["probe_noise"] == 2.0


@pytest.mark.parametrize("kw, match", [({"batchnorm": "train"}, "batchnorm"),
                                       ({"probe_noise": -1.0}, "probe_noise"),
                                       ({"statistic": "medians"}, "statistic")])
def test_convention_options_refuse_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        measure(Flat(), images(4), n_probes=4, **kw)


def test_accumulators_keep_no_view_of_the_layers(dtype):  # conftest: float32, float64
    # The shift is a copy of the first row: a view would keep that batch's whole activation
    # alive for the rest of the measurement, for every layer.
    x = torch.randn(6, 2, 5, dtype=dtype)
    bm, sm = BlockMoments(block=3), StreamingMoments()
    bm.update(x)
    sm.update(x)
    ptr = x.untyped_storage().data_ptr()
    for t in (bm.shift, bm._k, sm.shift):
        assert t.untyped_storage().data_ptr() != ptr
