"""Layer taps: names and order follow the forward pass, fx and hooks agree, bad names are clear."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffeosense.layers import LayerTap, list_layers, select_layers


class Reordered(nn.Module):
    """Modules registered in a different order than they are called."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4 * 2 * 2, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        x = self.act(self.pool(x))  # the same module called twice
        return self.fc(torch.flatten(x, 1))


class DataDependent(nn.Module):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > -1e30:  # always true, but fx cannot know
            x = self.relu(x)
        return x.flatten(1)


def test_order_follows_forward_pass_fx_and_hooks():
    x = torch.rand(2, 1, 6, 6)
    fx_names = [layer.name for layer in list_layers(Reordered(), x, method="fx")]
    hook_names = [layer.name for layer in list_layers(Reordered(), x, method="hooks")]
    assert fx_names == ["input", "conv", "bn", "act", "pool", "act_1", "flatten", "fc", "output"]
    # Hooks see module calls only (no functional flatten), same names, same order.
    assert hook_names == [n for n in fx_names if n != "flatten"]
    layers = list_layers(Reordered(), x)
    assert [layer.depth for layer in layers] == list(range(len(layers)))
    kinds = {layer.name: layer.kind for layer in layers}
    assert kinds == {"input": "input", "conv": "conv", "bn": "norm", "act": "activation",
                     "pool": "pool", "act_1": "activation", "flatten": "reshape",
                     "fc": "linear", "output": "output"}
    assert {layer.name: layer.shape for layer in layers}["pool"] == (4, 2, 2)


def test_fx_and_hooks_give_same_representations():
    torch.manual_seed(0)  # weights only; not part of what is measured
    model = Reordered().eval()
    x = torch.randn(5, 1, 6, 6)
    got = {}
    for method in ("fx", "hooks"):
        tap = LayerTap(model, x[:2], method)
        reps = {}
        tap(x, lambda n, t, reps=reps: reps.__setitem__(n, t.clone()))
        got[method] = reps
    common = set(got["fx"]) & set(got["hooks"])
    assert common == {"input", "conv", "bn", "act", "pool", "act_1", "fc", "output"}
    for name in common:
        torch.testing.assert_close(got["fx"][name], got["hooks"][name], rtol=0, atol=0)


@pytest.mark.parametrize("method", ["fx", "hooks"])
def test_inplace_relu_does_not_overwrite_earlier_layer(method):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True)).eval()
    x = torch.randn(4, 1, 5, 5)
    seen = {}
    LayerTap(model, x, method)(x, lambda n, t: seen.__setitem__(n, t.clone()))
    assert (seen["1"] < 0).any(), "the norm's output was rectified by the later in-place ReLU"
    torch.testing.assert_close(seen["2"], seen["1"].clamp_min(0))


def test_untraceable_model_falls_back_to_hooks():
    with pytest.warns(UserWarning, match="falling back to forward hooks"):
        tap = LayerTap(DataDependent(), torch.rand(2, 1, 5, 5))
    assert tap.method == "hooks"
    assert tap.names == ["input", "conv", "relu", "output"]
    with pytest.raises(ValueError, match="method='hooks'"):
        LayerTap(DataDependent(), torch.rand(2, 1, 5, 5), method="fx")


def test_functional_ops_and_residuals_are_layers():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return F.relu(x + self.conv(x)).mean((2, 3))

    layers = list_layers(Res(), torch.rand(2, 2, 4, 4))
    assert [(layer.name, layer.kind) for layer in layers] == [
        ("input", "input"), ("conv", "conv"), ("add", "add"), ("relu", "activation"),
        ("mean", "pool"), ("output", "output")]


def test_select_layers():
    layers = list_layers(Reordered(), torch.rand(2, 1, 6, 6))
    assert [la.name for la in select_layers(layers, ["fc", "conv"])] == ["conv", "fc"]
    assert [la.name for la in select_layers(layers, "conv+activation")] == [
        "input", "conv", "act", "act_1", "output"]
    assert [la.name for la in select_layers(layers, lambda la: la.kind == "norm")] == ["bn"]
    assert "flatten" not in [la.name for la in select_layers(layers, "modules")]
    with pytest.raises(ValueError, match=r"unknown layer\(s\): 'cnv' \(did you mean conv"):
        select_layers(layers, ["cnv"])
    with pytest.raises(ValueError, match="Valid layers: input, conv, bn"):
        select_layers(layers, ["nope"])
    with pytest.raises(ValueError, match="unknown layer kind"):
        select_layers(layers, "conv+bogus")


def test_list_layers_restores_mode_and_rejects_bad_output():
    model = Reordered().train()
    model.bn.eval()
    list_layers(model, torch.rand(2, 1, 6, 6))
    assert model.training and model.conv.training and not model.bn.training

    class Tuple(nn.Module):
        def forward(self, x):
            return x.sum()

    with pytest.raises(ValueError, match="batch"):
        LayerTap(Tuple(), torch.rand(3, 2))
