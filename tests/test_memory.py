"""``diffeosense._memory`` and ``measure(max_memory=...)``: the batch size follows the budget,
the numbers do not."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from diffeosense import measure
from diffeosense._memory import HEADROOM, WORKSPACE, parse_bytes, plan_memory
from diffeosense.layers import LayerTap
from diffeosense.sensitivity import CHUNK_BYTES


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 5))


@pytest.mark.parametrize(("text", "n"), [("4GB", 4 * 2**30), ("512 MiB", 2**29),
                                         ("1.5g", 3 * 2**29), ("2048", 2048), (10**6, 10**6)])
def test_parse_bytes_reads_binary_units(text, n):
    assert parse_bytes(text) == n


@pytest.mark.parametrize("bad", ["4 parsecs", "", "-1GB", "0", True, "GB"])
def test_parse_bytes_refuses_what_is_not_a_size(bad):
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes(bad)


def test_plan_counts_the_largest_layer_and_every_measured_accumulator():
    net, x = _net(), torch.randn(2, 3, 16, 16)
    tap = LayerTap(net, x)
    sizes = {layer.name: layer.size for layer in tap.layers}
    n_max, n_in = max(sizes.values()), sizes["input"]
    assert n_max == 16 * 16 * 16 and n_in == 3 * 16 * 16
    params = sum(p.numel() * 4 for p in net.parameters())
    plan = plan_memory(tap.layers, tap.layers, param_bytes=params, element_bytes=4,
                       n_probes=100)
    assert plan.per_probe == 4 * (6 * n_in + 12 * n_max)
    buffers = 4 * 4 * n_max  # the reductions' four work buffers of one probe (no chunk given)
    assert plan.fixed == WORKSPACE + params + buffers + 32 * sum(sizes.values())
    out = [layer for layer in tap.layers if layer.name == "output"]
    fewer = plan_memory(tap.layers, out, param_bytes=params, element_bytes=4, n_probes=100)
    assert fewer.per_probe == plan.per_probe
    assert fewer.fixed == WORKSPACE + params + buffers + 32 * 5
    # The component median keeps every probe's squared differences.
    med = plan_memory(tap.layers, out, param_bytes=params, element_bytes=4, n_probes=100,
                      components=True)
    assert med.fixed == fewer.fixed + 8 * 5 * 100


def test_the_batch_size_follows_the_budget_and_the_numbers_do_not():
    net, x = _net(), torch.randn(40, 3, 16, 16)
    tap = LayerTap(net, x[:2])
    params = sum(p.numel() * 4 for p in net.parameters())
    plan = plan_memory(tap.layers, tap.layers, param_bytes=params, element_bytes=4,
                       n_probes=40, chunk_bytes=CHUNK_BYTES)  # as measure plans it
    budget = int((plan.peak(7) + plan.per_probe // 2) / HEADROOM)  # room for 7 probes
    assert plan.batch_size(budget, 128) == 7 and plan.batch_size(budget, 4) == 4
    free = measure(net, x, n_probes=40, batch_size=16, max_memory=None)
    tight = measure(net, x, n_probes=40, batch_size=16, max_memory=budget)
    assert tight.config["batch_size"] == 7 and free.config["batch_size"] == 16
    assert tight.config["peak_memory_estimate"] == plan.peak(7) <= HEADROOM * budget
    a, b = free.table, tight.table
    assert list(a["layer"]) == list(b["layer"])
    for q in ("D", "G", "R", "D_se", "G_se", "R_se"):
        torch.testing.assert_close(torch.tensor(b[q].values), torch.tensor(a[q].values),
                                   rtol=1e-5, atol=1e-12)
    # The same batches as asking for 7 directly: the same numbers.
    direct = measure(net, x, n_probes=40, batch_size=7, max_memory=None)
    torch.testing.assert_close(torch.tensor(direct.table["D"].values),
                               torch.tensor(b["D"].values), rtol=1e-12, atol=0)
    # A generous budget never raises the batch size.
    assert measure(net, x, n_probes=40, batch_size=16, max_memory="64GB").config[
        "batch_size"] == 16


def test_a_budget_below_one_probe_says_what_it_needs():
    net, x = _net(), torch.randn(8, 3, 16, 16)
    with pytest.raises(ValueError, match=r"too small.*per probe.*raise max_memory"):
        measure(net, x, n_probes=8, max_memory="100MB")
    with pytest.raises(ValueError, match="memory size"):
        measure(net, x, n_probes=8, max_memory="lots")


def test_batch_statistics_cannot_be_split_so_they_must_fit():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 14 * 14, 3))
    x = torch.randn(64, 3, 16, 16)
    tap = LayerTap(net, x[:2])
    plan = plan_memory(tap.layers, tap.layers, param_bytes=0, element_bytes=4, n_probes=64,
                       chunk_bytes=CHUNK_BYTES)
    with pytest.raises(ValueError, match="batchnorm='batch' sends all 64 probes"):
        measure(net, x, n_probes=64, batchnorm="batch",
                max_memory=int(plan.peak(32) / HEADROOM))
    ok = measure(net, x, n_probes=64, batchnorm="batch", max_memory="1GB")
    assert ok.config["batch_size"] == 64


def test_progress_prints_the_plan_before_the_rest(capsys):
    net, x = _net(), torch.randn(20, 3, 16, 16)
    measure(net, x, n_probes=20, batch_size=5, progress=True)
    err = capsys.readouterr()
    text = err.err + err.out
    assert "measure: 20 probes x" in text and "in batches of 5" in text
    assert "estimated peak" in text and "4 batches" in text


def test_the_automatic_budget_degrades_to_one_probe_at_a_time(monkeypatch):
    import diffeosense._memory as mem

    monkeypatch.setattr(mem, "_available_ram", lambda: 2 * mem.WORKSPACE)  # nothing left
    net, x = _net(), torch.randn(6, 3, 16, 16)
    with pytest.warns(UserWarning, match="one probe at a time"):
        res = measure(net, x, n_probes=6, batch_size=4)
    assert res.config["batch_size"] == 1
    ref = measure(net, x, n_probes=6, batch_size=4, max_memory=None)
    torch.testing.assert_close(torch.tensor(res.table["D"].values),
                               torch.tensor(ref.table["D"].values), rtol=1e-5, atol=1e-12)
