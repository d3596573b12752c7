"""Spatial vs channel pooling: Laplacian eigenbasis, filter spectra, shuffling, the report."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from diffeosense import measure
from diffeosense.models import create_model
from diffeosense.pooling import (
    ChannelPermutation,
    FilterSpectra,
    PoolingReport,
    _pooling_table,
    filter_spectra,
    filter_spectrum,
    laplacian_eigenbasis,
    pooling_report,
    sample_permutations,
    shuffle_channels,
)


# ------------------------------------------------------------------ eigenbasis
def _dense_laplacian(shape: tuple[int, ...]) -> torch.Tensor:
    """Brute force: L = D - A of the 4-neighbour grid, built node by node."""
    nodes = list(itertools.product(*[range(n) for n in shape]))
    index = {v: i for i, v in enumerate(nodes)}  # row-major, like kernel.reshape(-1)
    L = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
    for v in nodes:
        for axis in range(len(shape)):
            for step in (-1, 1):
                w = list(v)
                w[axis] += step
                if 0 <= w[axis] < shape[axis]:
                    L[index[v], index[tuple(w)]] = -1.0
                    L[index[v], index[v]] += 1.0
    return L


SHAPES = [(h, w) for h in range(1, 6) for w in range(2, 6)] + [(n,) for n in range(2, 8)] + \
    [(2, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_eigenbasis_matches_dense_eigendecomposition(shape):
    lam, V = laplacian_eigenbasis(shape)
    L = _dense_laplacian(shape)
    K = L.shape[0]
    ref = torch.linalg.eigvalsh(L)
    assert torch.allclose(lam, ref, atol=1e-10)
    assert torch.allclose(V.T @ V, torch.eye(K, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(L @ V, V * lam, atol=1e-10)
    # Each eigenspace (degenerate eigenvalues grouped) equals the dense one: same projector.
    ref_val, ref_vec = torch.linalg.eigh(L)
    for value in torch.unique(torch.round(ref, decimals=8)):
        mine = V[:, (lam - value).abs() < 1e-8]
        theirs = ref_vec[:, (ref_val - value).abs() < 1e-8]
        assert torch.allclose(mine @ mine.T, theirs @ theirs.T, atol=1e-9)


def test_three_by_three_eigenvalues():
    lam, _ = laplacian_eigenbasis((3, 3))
    assert [round(v, 9) for v in lam.tolist()] == [0, 1, 1, 2, 3, 3, 4, 4, 6]
    sp = filter_spectrum(torch.randn(4, 3, 3, 3, dtype=torch.float64))
    assert sp.eigenvalue.tolist() == pytest.approx([0, 1, 2, 3, 4, 6])
    assert sp.multiplicity.tolist() == [1, 2, 1, 2, 2, 1]


def test_bad_kernel_shape():
    with pytest.raises(ValueError, match="positive sizes"):
        laplacian_eigenbasis((3, 0))


# ------------------------------------------------------------------ spectra
def test_homogeneous_filter_is_all_on_eigenvalue_zero():
    for kernel in [(3, 3), (5, 5), (2, 4), (7,)]:
        w = torch.full((2, 3, *kernel), 0.7)
        sp = filter_spectrum(w)
        assert sp.eigenvalue[0] == 0
        assert torch.allclose(sp.power[:, 0], w[0, 0].pow(2).sum().double())
        assert sp.power[:, 1:].abs().max() < 1e-12


def test_checkerboard_is_all_on_the_top_eigenvalue():
    board = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    sp = filter_spectrum(board.view(1, 1, 2, 2))
    assert sp.eigenvalue[-1] == pytest.approx(4.0)
    assert sp.power[0, -1] == pytest.approx(4.0)
    assert sp.power[0, :-1].abs().max() < 1e-12


@pytest.mark.parametrize("shape", [(5, 4, 3, 3), (2, 6, 5, 5), (3, 2, 1, 4), (8, 3, 7),
                                   (2, 2, 3, 2, 2)])
def test_parseval(shape, gen):
    w = torch.randn(shape, generator=gen)
    sp = filter_spectrum(w)
    norms = w.double().reshape(-1, int(np.prod(shape[2:]))).pow(2).sum(1)
    assert torch.allclose(sp.power.sum(1), norms, rtol=1e-12)
    assert int(sp.multiplicity.sum()) == int(np.prod(shape[2:]))


def test_white_filters_put_one_over_k_on_each_mode(gen):
    net = nn.Sequential(nn.Conv2d(64, 64, 3))  # PyTorch init: i.i.d. uniform entries
    h = filter_spectra(net).homogeneous()
    # 4096 slices: the relative error of the mean squared projection is ~2-3 %.
    assert h.fraction[0] == pytest.approx(1 / 9, rel=0.15)
    assert h.white[0] == pytest.approx(1 / 9)


class _Tangled(nn.Module):
    """Registers its convolutions in the reverse of the order it calls them."""

    def __init__(self):
        super().__init__()
        self.late = nn.Conv2d(4, 4, 1)                            # 1 x 1
        self.mid = nn.Conv2d(4, 4, 3, padding=1, groups=4)        # depthwise
        self.early = nn.Conv2d(2, 4, (1, 3), padding=(0, 1))      # rectangular
        self.act = nn.ReLU()

    def forward(self, x):
        return self.late(self.act(self.mid(self.act(self.early(x)))))


def test_filter_spectra_table_order_and_notes():
    net = _Tangled()
    x = torch.rand(2, 2, 6, 6)
    fwd = filter_spectra(net, x)
    reg = filter_spectra(net)
    assert fwd.layers == ["early", "mid", "late"] and reg.layers == ["late", "mid", "early"]
    assert fwd.config["order"] == "forward" and reg.config["order"] == "registration"
    df = fwd.to_frame()
    assert list(df.columns[:3]) == ["layer", "depth", "conv"]
    # depths are the layer depths of measure's table
    depths = measure(net, x, perturbation=lambda t, g: t, n_probes=2).to_frame()
    want = dict(zip(depths.layer, depths.depth, strict=True))
    assert {n: int(d) for n, d in zip(df.layer, df.depth, strict=True)} == \
        {n: want[n] for n in df.layer}
    early = df[df.layer == "early"]
    assert early.kernel.iloc[0] == "1x3" and early.eigenvalue.tolist() == pytest.approx([0, 1, 3])
    assert early.fraction.sum() == pytest.approx(1.0)
    mid = df[df.layer == "mid"]
    assert "depthwise" in mid.note.iloc[0] and mid.n_slices.iloc[0] == 4
    late = df[df.layer == "late"]
    assert len(late) == 1 and math.isnan(late.eigenvalue.iloc[0])
    assert "no spatial extent" in late.note.iloc[0]
    assert math.isnan(fwd.homogeneous().set_index("layer").fraction["late"])


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_spectra_save_load_roundtrip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    sp = filter_spectra(_Tangled(), torch.rand(2, 2, 6, 6))
    path = sp.save(tmp_path / f"spectra{suffix}")
    back = FilterSpectra.load(path)
    assert back.config == sp.config and back.provenance == sp.provenance
    a, b = sp.to_frame(), back.to_frame()
    assert list(a.columns) == list(b.columns) and a.layer.tolist() == b.layer.tolist()
    assert np.allclose(a.fraction, b.fraction, equal_nan=True)
    assert a.note.tolist() == b.note.tolist()
    with pytest.raises(FileNotFoundError):
        FilterSpectra.load(tmp_path / "missing.csv")


# ------------------------------------------------------------------ shuffling
def _small_net(groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1, groups=groups), nn.ReLU(),
                         nn.Conv2d(6, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_shuffle_keeps_spectra_and_original_changes_function(gen):
    net = _small_net().eval()
    before = _state(net)
    twin = shuffle_channels(net, generator=gen).eval()
    for k, v in net.state_dict().items():  # the original is bit-identical
        assert torch.equal(v, before[k]), k
    a, b = filter_spectra(net).to_frame(), filter_spectra(twin).to_frame()
    assert np.allclose(a.power, b.power, rtol=1e-12) and np.allclose(a.fraction, b.fraction)
    for name in ("0", "3", "5"):  # the multiset of filter slices is exactly the same
        w, w2 = net.get_submodule(name).weight, twin.get_submodule(name).weight
        rows = w.detach().reshape(-1, 9)
        rows2 = w2.detach().reshape(-1, 9)
        assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, rows2.tolist()))
    for k in ("1.running_mean", "1.running_var", "1.weight", "8.weight"):  # BN, linear kept
        assert torch.equal(twin.state_dict()[k], before[k])
    x = torch.rand(5, 2, 8, 8, generator=gen)
    with torch.no_grad():
        assert not torch.allclose(net(x), twin(x), atol=1e-4)


def test_identity_permutation_is_a_no_op(gen):
    net = _small_net(groups=2).eval()
    perms = sample_permutations(net, gen, outputs=True)
    ident = {n: ChannelPermutation(torch.arange(p.inputs.shape[1]).repeat(len(p.inputs), 1),
                                   torch.arange(len(p.outputs)))
             for n, p in perms.items()}
    assert all(p.is_identity for p in ident.values())
    twin = shuffle_channels(net, permutations=ident)
    for k, v in net.state_dict().items():
        assert torch.equal(twin.state_dict()[k], v)


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_permuted_conv_equals_permuted_inputs_and_outputs(groups, gen):
    """y'(x) = y(x[:, pi^-1])[:, sigma]: the permutation acts on channels as documented."""
    conv = nn.Conv2d(6, 12, 3, groups=groups)
    perms = sample_permutations(conv, gen, outputs=True)
    p = perms[""]
    twin = shuffle_channels(conv, permutations=perms)
    # pi as a permutation of all 6 input channels, inside each group
    m = 6 // groups
    pi = torch.cat([p.inputs[g] + g * m for g in range(groups)])
    inv = torch.argsort(pi)
    x = torch.randn(2, 6, 5, 5, generator=gen)
    with torch.no_grad():
        assert torch.allclose(twin(x), conv(x[:, inv])[:, p.outputs], atol=1e-6)
    assert (p.outputs // (12 // groups) == torch.arange(12) // (12 // groups)).all()


def test_depthwise_and_first_layer_left_alone(gen):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 4, 3))
    twin = shuffle_channels(net, generator=gen, first_layer=False)
    assert torch.equal(twin[0].weight, net[0].weight)  # first layer skipped
    assert torch.equal(twin[1].weight, net[1].weight)  # depthwise: nothing to permute
    assert not torch.equal(twin[2].weight, net[2].weight)
    assert "0" not in sample_permutations(net, gen, first_layer=False)


def test_shuffle_is_seeded():
    net = _small_net()
    a = shuffle_channels(net, generator=torch.Generator().manual_seed(5))
    b = shuffle_channels(net, generator=torch.Generator().manual_seed(5))
    c = shuffle_channels(net, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[3].weight, b[3].weight) and not torch.equal(a[3].weight, c[3].weight)


def test_shuffle_bad_input(gen):
    net = _small_net()
    with pytest.raises(ValueError, match="generator"):
        shuffle_channels(net)
    with pytest.raises(ValueError, match="torch.Generator"):
        sample_permutations(net, 0)
    with pytest.raises(ValueError, match="no convolution 'nope'"):
        shuffle_channels(net, permutations={"nope": ChannelPermutation(torch.arange(2)[None])})
    with pytest.raises(ValueError, match="shape"):
        shuffle_channels(net, permutations={"3": ChannelPermutation(torch.arange(3)[None])})
    with pytest.raises(ValueError, match="not a permutation"):
        shuffle_channels(net, permutations={"0": ChannelPermutation(torch.tensor([[0, 0]]))})


# ------------------------------------------------------------------ channel pooling by hand
N = 8


def _pair_net() -> nn.Sequential:
    """Layer 1: channels x(i), x(i-1), 2x(i), 2x(i-1) (two filters and their shifted copies);
    layer 2: output 0 sums the first pair, output 1 the second (channel pooling)."""
    c1 = nn.Conv1d(1, 4, 3, padding=1, padding_mode="circular", bias=False)
    c2 = nn.Conv1d(4, 2, 1, bias=False)
    with torch.no_grad():
        c1.weight.copy_(torch.tensor([[[0, 1, 0]], [[1, 0, 0]], [[0, 2, 0]], [[2, 0, 0]]],
                                     dtype=torch.float32))
        c2.weight.copy_(torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]],
                                     dtype=torch.float32)[..., None])
    return nn.Sequential(c1, c2)


def _shift(x, g):
    return torch.roll(x, 1, dims=-1)  # a delta at p moves to p + 1


def test_channel_pooling_by_hand_and_shuffling_destroys_it():
    """Probes: the N deltas on a circle; tau: shift by one site.

    Original layer 2: f_p = (s_p, 2 s_p) with s_p = e_p + e_{p+1}. ||f_{p+1} - f_p||^2 = 5 * 2;
    over pairs p != q, ||s_p - s_q||^2 = 4 - 2 [q = p +- 1], mean 4 - 4 / (N - 1), so
    D = 10 / (5 (4 - 4 / (N - 1))) = (N - 1) / (2 (N - 2)) = 7/12 for N = 8.
    Swapping inputs 1 and 2 of layer 2 gives f_p = (3 e_p, 3 e_{p+1}): D = 36 / 36 = 1.
    """
    x = torch.eye(N).view(N, 1, N)
    net = _pair_net()
    perm = {"1": ChannelPermutation(torch.tensor([[0, 2, 1, 3]]))}
    twin = shuffle_channels(net, permutations=perm)
    kw = dict(perturbation=_shift, n_probes=N, batch_size=N, channels=True)
    orig, shuf = measure(net, x, **kw), measure(twin, x, **kw)
    d_orig, d_shuf = orig["1"].D, shuf["1"].D
    assert d_orig == pytest.approx((N - 1) / (2 * (N - 2)), rel=1e-5)
    assert d_shuf == pytest.approx(1.0, rel=1e-5)
    assert d_shuf / d_orig == pytest.approx(12 / 7, rel=1e-5)
    assert orig["0"].D == pytest.approx(1.0, rel=1e-5) == shuf["0"].D
    table = _pooling_table(orig, [shuf], filter_spectra(net, x), 1e-12).set_index("layer")
    assert table.stability["1"] == pytest.approx(math.log(12 / 7), rel=1e-4)
    assert table.channel_fraction["1"] == pytest.approx(1.0)   # all of it was channel pooling
    assert table.channel_fraction["0"] == 0.0                  # no stability to share at layer 1
    assert table.channel_fraction["input"] == 0.0
    assert table.D_shuffled["1"] == pytest.approx(1.0, rel=1e-5)
    # K copies with equal D: the mean of their logs may round; the input still has nothing lost
    three = _pooling_table(orig, [shuf] * 3, None, 1e-12).set_index("layer")
    assert three.channel_fraction["input"] == 0.0 and three.stability["input"] == 0.0
    assert three.channel_fraction["1"] == pytest.approx(1.0)
    # a permutation that keeps the pairs keeps the stability: nothing is lost
    keep = {"1": ChannelPermutation(torch.tensor([[2, 3, 0, 1]]))}
    same = measure(shuffle_channels(net, permutations=keep), x, **kw)
    t2 = _pooling_table(orig, [same], None, 1e-12).set_index("layer")
    assert t2.channel_fraction["1"] == pytest.approx(0.0, abs=1e-6)
    assert t2.spatial_fraction["1"] == pytest.approx(1.0, abs=1e-6)


def test_fraction_finite_for_zero_and_undefined_d():
    """D = 0 (a layer that does not move) and a layer constant over the probes keep finite
    fractions: 0/0 counts as perfectly stable, clipped at d_floor."""
    x = torch.eye(N).view(N, 1, N)
    net = nn.Sequential(_pair_net(), nn.AdaptiveAvgPool1d(1))   # circular sum: D = 0
    kw = dict(perturbation=_shift, n_probes=N, batch_size=N, channels=True)
    with pytest.warns(UserWarning, match="constant"):
        orig = measure(net, x, **kw)
    twin = shuffle_channels(net, permutations={"0.1": ChannelPermutation(
        torch.tensor([[0, 2, 1, 3]]))})
    with pytest.warns(UserWarning, match="constant"):
        shuf = measure(twin, x, **kw)
    t = _pooling_table(orig, [shuf], None, 1e-12).set_index("layer")
    assert math.isnan(orig["1"].D)  # measure: undefined (every probe gives the same sum)
    assert np.isfinite(t.channel_fraction).all() and np.isfinite(t.stability).all()
    assert t.stability["1"] == pytest.approx(-math.log(1e-12))


# ------------------------------------------------------------------ the report
@pytest.mark.filterwarnings("ignore:representation constant")  # squeeze-excitation at init
def test_report_end_to_end_efficientnet():
    """Grouped, depthwise, 1 x 1 and strided convolutions, squeeze-excitation, BatchNorm."""
    net = create_model("efficientnetb0", in_channels=3, num_classes=10, dropout=0.0)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = _state(net)
    rep = pooling_report(net, x, n_shuffles=1, n_probes=6, batch_size=6, layers="conv",
                         seed=3)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    t = rep.to_frame().set_index("layer")
    assert np.isfinite(t.channel_fraction).all()
    assert t.channel_fraction.between(0, 1).all()
    sp = rep.spectra.to_frame()
    dw = sp[sp.note.str.contains("depthwise")]
    assert len(dw.layer.unique()) == 16  # one depthwise conv per MBConv block
    one = sp[sp.note.str.contains("no spatial extent")]
    assert one.eigenvalue.isna().all() and len(one) > 30
    assert "depthwise" in t.note["layers.0.conv2"]
    assert set(rep.sensitivity.variant) == {"original", "shuffled"}
    assert set(rep.sensitivity.view) == {"full", "channel-mean"}


def test_report_cnn1d_strided_is_deterministic_and_roundtrips(tmp_path):
    net = create_model("cnn1d", in_channels=1, num_classes=1, depth=3, width=8,
                       filter_size=2, stride=2)
    x = torch.rand(12, 1, 16, generator=torch.Generator().manual_seed(1))
    kw = dict(n_shuffles=2, n_probes=12, batch_size=12, perturbation=_shift, seed=1)
    a, b = pooling_report(net, x, **kw), pooling_report(net, x, **kw)
    assert a.to_frame().equals(b.to_frame())
    sp = a.spectra.to_frame()
    assert sorted(set(sp.eigenvalue)) == [0.0, 2.0] and set(sp.kernel) == {"2"}
    conv1 = a.to_frame().set_index("layer").note["features.conv1"]
    assert "one input channel" in conv1
    paths = a.save(tmp_path / "rep", prefix="x_")
    assert [p.name for p in paths] == ["x_pooling.csv", "x_sensitivity.csv", "x_spectra.csv"]
    assert all(p.with_name(p.stem + ".meta.json").exists() for p in paths)
    back = PoolingReport.load(tmp_path / "rep", prefix="x_")
    assert np.allclose(back.table.channel_fraction, a.table.channel_fraction, equal_nan=True)
    assert back.config == a.config
    res = back.sensitivity_result("shuffled", 1)
    assert res.to_frame("full").layer.tolist() == a.sensitivity_result().to_frame("full") \
        .layer.tolist()
    with pytest.raises(ValueError, match="no rows"):
        back.sensitivity_result("shuffled", 7)


def test_report_bad_input():
    net = _small_net()
    x = torch.rand(4, 2, 8, 8)
    with pytest.raises(ValueError, match="n_shuffles"):
        pooling_report(net, x, n_shuffles=-1)
    with pytest.raises(ValueError, match="channels=True"):
        pooling_report(net, x, channels=False)
    with pytest.raises(ValueError, match="d_floor"):
        pooling_report(net, x, d_floor=0)
    with pytest.raises(ValueError, match="no probes"):
        pooling_report(net, x[:0])


@pytest.mark.parametrize("net", [
    nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)),
    nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),  # one input channel, then
                  nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(),  # depthwise
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)),
], ids=["fully-connected", "depthwise"])
def test_a_net_with_nothing_to_shuffle_is_not_measured(net):
    """Every shuffled copy is the net itself: channel and spatial fractions are NaN with the
    reason, not 'all spatial pooling' where nothing was tested."""
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="nothing to shuffle"):
        rep = pooling_report(net, x, n_shuffles=2, n_probes=12)
    t = rep.to_frame()
    assert t.channel_fraction.isna().all() and t.spatial_fraction.isna().all()
    assert t.note.str.contains("not measured: nothing to shuffle").all()
    np.testing.assert_allclose(t.D_shuffled, t.D)  # measured: the copies are the net


def test_a_net_with_something_to_shuffle_keeps_its_fractions():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = pooling_report(net, torch.rand(12, 1, 8, 8), n_shuffles=2, n_probes=12)
    assert not [w for w in caught if "nothing to shuffle" in str(w.message)]
    t = rep.to_frame()
    assert t.channel_fraction.notna().all()
    assert not t.note.str.contains("nothing to shuffle").any()
