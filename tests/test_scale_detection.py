"""Tests of the scale-detection data and its active-pixel moves."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffeosense.data.scale_detection import (
    ActivePixelMove,
    ScaleDetectionConfig,
    active_positions,
    label_pairs,
    make_scale_detection,
    pair_counts,
    render_pairs,
    sample_moves,
)
from diffeosense.perturbations import as_perturbation


def _periodic_counts(n, lo, hi):
    """By hand: N unordered pairs at each periodic distance 1 <= d < N/2, N/2 at d = N/2."""
    pos = neg = 0
    for d in range(1, n // 2 + 1):
        mult = n // 2 if (n % 2 == 0 and 2 * d == n) else n
        pos += mult * (d < lo)
        neg += mult * (d >= hi)
    return pos, neg


@pytest.mark.parametrize("n,xi,gap", [(16, 4, 2), (17, 5, 2), (20, 6, 0), (12, 3.5, 1)])
def test_periodic_counts_match_formula(n, xi, gap):
    cfg = ScaleDetectionConfig(dim=1, size=n, xi=xi, gap=gap, train_size=0)
    counts = pair_counts(cfg)
    pos, neg = _periodic_counts(n, xi - gap / 2, xi + gap / 2)
    assert (counts["pos"], counts["neg"]) == (pos, neg)
    assert sum(counts.values()) == n * (n - 1) // 2


@pytest.mark.parametrize("n,xi", [(16, 4), (12, 3), (10, 4)])
def test_block_counts_match_formula(n, xi):
    cfg = ScaleDetectionConfig(dim=1, size=n, xi=xi, task="block", train_size=0)
    sizes = [min(xi, n - b) for b in range(0, n, xi)]
    pos = sum(s * (s - 1) // 2 for s in sizes)
    assert pair_counts(cfg) == {"pos": pos, "neg": n * (n - 1) // 2 - pos, "gap": 0}


def test_2d_counts_match_offset_formula():
    """(d - |a|)(d - |b|) ordered placements per offset (a, b); unordered pairs: halve."""
    d, xi, gap = 8, 4, 2
    cfg = ScaleDetectionConfig(dim=2, size=d, xi=xi, gap=gap, train_size=0)
    pos = neg = 0
    for a, b in itertools.product(range(-d + 1, d), repeat=2):
        if (a, b) == (0, 0):
            continue
        mult = (d - abs(a)) * (d - abs(b))
        r = math.hypot(a, b)
        pos += mult * (r < xi - gap / 2)
        neg += mult * (r >= xi + gap / 2)
    counts = pair_counts(cfg)
    assert (counts["pos"], counts["neg"]) == (pos // 2, neg // 2)


def _brute_label(i, j, cfg):
    if cfg.dim == 1 and cfg.task == "block":
        return 1.0 if i // cfg.xi == j // cfg.xi else -1.0
    if cfg.dim == 1:
        d = min(abs(i - j), cfg.size - abs(i - j))
    else:
        d = math.dist(divmod(i, cfg.size), divmod(j, cfg.size))
    if d < cfg.xi - cfg.gap / 2:
        return 1.0
    return -1.0 if d >= cfg.xi + cfg.gap / 2 else 0.0


@pytest.mark.parametrize(
    "cfg",
    [ScaleDetectionConfig(dim=1, size=24, xi=6, gap=2, train_size=40, seed=1),
     ScaleDetectionConfig(dim=1, size=24, xi=4, task="block", train_size=40, seed=2),
     ScaleDetectionConfig(dim=2, size=8, xi=4, gap=2, train_size=60, test_size=100, seed=3)],
)
def test_dataset_labels_balance_split(cfg):
    data = make_scale_detection(cfg)
    for x, y, pos in ((data.x_train, data.y_train, data.pos_train),
                      (data.x_test, data.y_test, data.pos_test)):
        assert x.shape == (len(y),) + cfg.shape
        assert torch.equal(active_positions(x), pos)
        assert torch.all(x.reshape(len(x), -1).gather(1, pos) == cfg.value)
        assert [_brute_label(int(i), int(j), cfg) for i, j in pos] == y.tolist()
        assert int((y == 1).sum()) == int((y == -1).sum())  # balanced
    assert len(data.y_train) == cfg.train_size
    train = {tuple(p) for p in data.pos_train.tolist()}
    test = {tuple(p) for p in data.pos_test.tolist()}
    assert not train & test
    if cfg.test_size is None:  # all remaining balanced pairs are used
        c = pair_counts(cfg)
        assert len(train) + len(test) == 2 * min(c["pos"], c["neg"])
    else:
        assert len(test) == cfg.test_size


def test_dataset_is_seeded():
    cfg = ScaleDetectionConfig(size=32, xi=8, train_size=64)
    a, b = make_scale_detection(cfg), make_scale_detection(cfg)
    c = make_scale_detection(ScaleDetectionConfig(size=32, xi=8, train_size=64, seed=1))
    assert torch.equal(a.pos_train, b.pos_train) and torch.equal(a.pos_test, b.pos_test)
    assert not torch.equal(a.pos_train, c.pos_train)


def test_default_amplitude_and_2d_defaults():
    cfg = ScaleDetectionConfig(dim=2, size=28, xi=14, gap=2)
    assert cfg.value == 28**2 / 2
    assert ScaleDetectionConfig(size=64).value == 32.0
    assert ScaleDetectionConfig(amplitude=1.5).value == 1.5


@pytest.mark.parametrize(
    "kwargs,msg",
    [(dict(dim=3), "dim"), (dict(task="other"), "task"), (dict(dim=2, task="block"), "dim=1"),
     (dict(task="block", xi=2.5), "integer"), (dict(size=16, xi=4, train_size=10_000), "too large")],
)
def test_bad_config(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        make_scale_detection(ScaleDetectionConfig(**kwargs))


# ---------------------------------------------------------------- moves


def _step_sizes(old, new, cfg, boundary):
    if cfg.dim == 1:
        diff = (new - old).abs()
        if boundary == "periodic":
            diff = torch.minimum(diff, cfg.size - diff)
        return diff
    r0, c0, r1, c1 = old // cfg.size, old % cfg.size, new // cfg.size, new % cfg.size
    dr, dc = (r1 - r0).abs(), (c1 - c0).abs()
    if boundary == "periodic":
        dr, dc = torch.minimum(dr, cfg.size - dr), torch.minimum(dc, cfg.size - dc)
    return dr + dc


CONFIGS = [
    ScaleDetectionConfig(dim=1, size=32, xi=8, gap=2, train_size=100),
    ScaleDetectionConfig(dim=1, size=32, xi=8, task="block", train_size=100),
    ScaleDetectionConfig(dim=2, size=10, xi=5, gap=2, train_size=100, test_size=200),
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("boundary", ["clip", "periodic"])
def test_label_preserving_moves(cfg, boundary):
    data = make_scale_detection(cfg)
    move = ActivePixelMove(cfg, boundary=boundary)
    g = torch.Generator().manual_seed(0)
    moved_any = 0
    for _ in range(5):
        params = move.sample(data.x_test, g)
        out = move.apply(data.x_test, params)
        pos = active_positions(out)
        assert torch.equal(label_pairs(pos, cfg), data.y_test)  # label never changes
        assert torch.all(_step_sizes(params.old, params.new, cfg, boundary) <= 1)
        # the two pixels keep their values and stay distinct
        assert torch.equal(out.sum((1, 2) if cfg.dim == 1 else (1, 2, 3)),
                           data.x_test.sum((1, 2) if cfg.dim == 1 else (1, 2, 3)))
        moved_any += int((params.new != params.old).any(1).sum())
    assert moved_any > 0.5 * 5 * len(data.y_test)  # most samples do move


def test_plain_moves_can_change_labels_and_clip():
    cfg = ScaleDetectionConfig(dim=1, size=16, xi=4, gap=2, train_size=0)
    pos = torch.tensor([[0, 2], [13, 15]] * 200)
    g = torch.Generator().manual_seed(0)
    new = sample_moves(pos, cfg, g, label_preserving=False, boundary="clip")
    assert new.min() >= 0 and new.max() <= 15
    assert (new[:, 0] != new[:, 1]).all()
    assert (label_pairs(new, cfg) != label_pairs(pos, cfg)).any()
    # a clipped pixel at the border stays; never jumps across the circle
    assert set(new[0::2, 0].tolist()) <= {0, 1}
    assert set(new[1::2, 1].tolist()) <= {14, 15}


def test_moves_replay_and_determinism():
    cfg = CONFIGS[2]
    data = make_scale_detection(cfg)
    move = ActivePixelMove(cfg, label_preserving=False)
    p1 = move.sample(data.x_test, torch.Generator().manual_seed(7))
    p2 = move.sample(data.x_test, torch.Generator().manual_seed(7))
    assert torch.equal(p1.new, p2.new)
    assert torch.equal(move.apply(data.x_test, p1), move.apply(data.x_test, p1))
    p3 = move.sample(data.x_test, torch.Generator().manual_seed(8))
    assert not torch.equal(p1.new, p3.new)


def test_move_errors():
    cfg = ScaleDetectionConfig(size=16, xi=4, train_size=8)
    move = ActivePixelMove(cfg)
    x = render_pairs(torch.tensor([[1, 3]]), cfg)
    three = x.clone()
    three[0, 0, 9] = 1.0
    with pytest.raises(ValueError, match="exactly two"):
        move.sample(three, torch.Generator())
    with pytest.raises(ValueError, match="do not match"):
        move.sample(torch.zeros(1, 1, 20), torch.Generator())
    params = move.sample(x, torch.Generator().manual_seed(0))
    other = render_pairs(torch.tensor([[5, 7]]), cfg)
    with pytest.raises(ValueError, match="another batch"):
        move.apply(other, params)
    with pytest.raises(ValueError, match="boundary"):
        ActivePixelMove(cfg, boundary="reflect")


def test_registered_as_perturbation():
    p = as_perturbation("pixel-move:dim=1,size=16,xi=4,gap=2,label_preserving=True")
    assert p.name == "pixel-move-preserving" and p.config.size == 16
    x = render_pairs(torch.tensor([[2, 4], [0, 12]]), p.config)
    out = p.apply(x, p.sample(x, torch.Generator().manual_seed(0)))
    assert out.shape == x.shape


@pytest.mark.parametrize("cfg", [
    ScaleDetectionConfig(dim=1, size=64, xi=8, gap=2, train_size=512),
    ScaleDetectionConfig(dim=1, size=128, xi=32, gap=0, task="block", amplitude=8.0,
                         train_size=1024, seed=3),
    ScaleDetectionConfig(dim=1, size=64, xi=8, gap=2, amplitude=math.sqrt(32), test_size=100,
                         train_size=64),
    ScaleDetectionConfig(dim=2, size=10, xi=4.5, gap=1, train_size=32, test_size=None),
])
def test_task_dataset_name_names_the_task_exactly(cfg):
    from diffeosense.data import DataConfig, load_dataset
    from diffeosense.data.scale_detection import dataset_task, task_dataset_name

    name = task_dataset_name(cfg)
    assert dataset_task(name, P=cfg.train_size, seed=cfg.seed) == cfg
    # The dataset loaded by that name is the task's split, element for element.
    data = make_scale_detection(cfg)
    ds = load_dataset(DataConfig(name=name, P=cfg.train_size, seed=cfg.seed, download=False))
    assert torch.equal(ds.x_test, data.x_test) and torch.equal(ds.y_test, data.y_test)
    assert torch.equal(ds.x_train, data.x_train)


def test_balanced_probes_alternate_the_classes():
    from diffeosense.probes import balanced_probes

    cfg = ScaleDetectionConfig(dim=1, size=16, xi=4, gap=2, train_size=20, seed=1)
    data = make_scale_detection(cfg)
    for n in (2, 7, None):
        probes = balanced_probes(data.x_test, data.y_test, n)
        y = label_pairs(active_positions(probes), cfg)
        assert y[0::2].eq(1).all() and y[1::2].eq(-1).all()
        assert len(probes) == (len(data.x_test) if n is None else n)
