"""``measure(model, data, config=MeasureConfig(...), **overrides)``: the same result as the
keywords, explicit keywords win, an unknown override is a clear error."""

from dataclasses import asdict

import pytest
import torch
from torch import nn

from diffeosense.sensitivity import MeasureConfig, measure


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3))


def _frame(res):
    return res.to_frame("full")[["layer", "D", "G", "R", "n_probes"]].reset_index(drop=True)


def test_config_equals_its_keywords_and_overrides_win():
    net, x = _net(), torch.rand(12, 1, 8, 8)
    c = MeasureConfig(n_probes=10, batch_size=4, seed=3, denominator="pairs-incl-diag",
                      statistic="median", n_bootstrap=5)
    a = measure(net, x, config=c)
    b = measure(net, x, **asdict(c))
    assert _frame(a).equals(_frame(b))
    assert a.config == b.config
    o = measure(net, x, config=c, seed=4, n_probes=8)
    ref = measure(net, x, **{**asdict(c), "seed": 4, "n_probes": 8})
    assert _frame(o).equals(_frame(ref))
    assert (o.config["seed"], o.config["n_probes"]) == (4, 8)
    assert not _frame(o).equals(_frame(a))
    # positional options still work, with or without a config
    p = measure(net, x, "all", "diffeo", 10, 4, config=c)
    assert _frame(p).equals(_frame(a))


def test_unknown_or_repeated_override_is_a_clear_error():
    net, x = _net(), torch.rand(4, 1, 8, 8)
    with pytest.raises(TypeError, match="unknown option.*n_probe\\b.*known: layers"):
        measure(net, x, config=MeasureConfig(n_probes=4), n_probe=3)
    with pytest.raises(TypeError, match="unknown option"):
        measure(net, x, n_probe=3)
    with pytest.raises(TypeError, match="repeated option.*layers"):
        measure(net, x, "all", config=MeasureConfig(n_probes=4), layers="all")
    with pytest.raises(TypeError, match="config must be a MeasureConfig"):
        measure(net, x, config={"n_probes": 4})


def test_drop_repeats_drops_layers_that_repeat_the_one_before():
    """A Flatten repeats its input and a fresh BatchNorm (eval: x / sqrt(1 + eps)) its conv;
    the linear head is repeated by ``output``, which is kept in its place."""
    from torch import nn

    from diffeosense import measure

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = dict(layers="all", n_probes=16, seed=0, perturbation="diffeo:cut=2,displacement=0.5")
    every = measure(net, x, **kw).to_frame()
    kept = measure(net, x, drop_repeats=True, **kw)
    assert every.layer.tolist() == ["input", "0", "1", "2", "3", "4", "output"]
    assert kept.to_frame().layer.tolist() == ["input", "0", "2", "output"]
    assert kept.config["repeats_dropped"] == {"1": "0", "3": "2", "4": "output"}
    same = every.set_index("layer").loc[["input", "0", "2", "output"], ["D", "G"]]
    assert (kept.to_frame().set_index("layer")[["D", "G"]] == same).all().all()
