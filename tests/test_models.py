"""Tests of diffeosense.models: shapes, parameter counts, layer discovery (fx and hooks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from diffeosense.models import create_model, list_models

PAPER_MODELS = [
    "fc2", "fc4", "fc6", "lenet", "alexnet",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11bn", "vgg13bn", "vgg16bn", "vgg19bn",
    "resnet18", "resnet34", "resnet50", "efficientnetb0", "simplecnn",
]  # fmt: skip


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_registry_has_the_paper_models():
    assert set(PAPER_MODELS) <= set(list_models())
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet-18")


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_forward_shapes(name):
    # Without image_size a model is built for 28 px with one channel and 32 px with three
    # (the authors' convention); image_size overrides it.
    for c, s, kw in [(1, 28, {}), (3, 32, {}), (1, 32, {"image_size": 32}),
                     (3, 28, {"image_size": 28})]:  # fmt: skip
        net = create_model(name, in_channels=c, num_classes=7, **kw).eval()
        with torch.no_grad():
            assert net(torch.zeros(2, c, s, s)).shape == (2, 7), (c, s)


# Parameter counts for 3 input channels, 10 classes, 32 px, worked out by hand:
# - fc2: 3072*64+64 + 64*10+10 = 197322; each extra hidden layer adds 64*64+64 = 4160.
# - lenet: conv 3*6*25+6=456, conv 6*16*25+16=2416, fc 400*120+120=48120, 120*84+84=10164,
#   84*10+10=850 -> 62006 (the usual LeNet-5 on CIFAR count).
# - alexnet (authors'): convs 1792+110784+663936+884992+590080, fc 1024*4096+4096,
#   4096*4096+4096, 4096*10+10 -> 23272266.
# - vgg11: convs with bias 1792+73856+295168+590080+1180160+3*2359808, fc 5130 -> 9225610;
#   batch norm adds 2*(64+128+2*256+4*512) = 5504 -> 9231114 (kuangliu's VGG11, 9.23M).
# - resnet18: stem 1728+128, layer1 2*73984, layer2 230144+295424, layer3 919040+1180672,
#   layer4 3673088+4720640, fc 5130 -> 11173962 (kuangliu's CIFAR ResNet18).
# - resnet34 with [3, 4, 6, 3] basic blocks -> 21282122.
# - resnet50: torchvision's ImageNet ResNet50 has 25557032 parameters; the CIFAR variant
#   swaps the 7x7x3x64 stem (9408) for a 3x3 one (1728) and the 2048x1000 head (2049000)
#   for a 2048x10 one (20490): 25557032 - 9408 + 1728 - 2049000 + 20490 = 23520842.
KNOWN_COUNTS = {
    "fc2": 197322, "fc4": 197322 + 2 * 4160, "fc6": 197322 + 4 * 4160, "lenet": 62006,
    "alexnet": 23272266, "vgg11": 9225610, "vgg11bn": 9231114, "resnet18": 11173962,
    "resnet34": 21282122, "resnet50": 23520842,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(KNOWN_COUNTS))
def test_known_parameter_counts(name):
    assert _count(create_model(name, in_channels=3, num_classes=10)) == KNOWN_COUNTS[name]


def _vgg_formula(cfg, bn, c=3, classes=10):
    n, c_in = 0, c
    for v in cfg:
        if v != "M":
            n += c_in * v * 9 + v + (2 * v if bn else 0)
            c_in = v
    return n + c_in * classes + classes


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize("bn", [False, True])
def test_vgg_counts_by_formula(depth, bn):
    convs = {11: [1, 1, 2, 2, 2], 13: [2, 2, 2, 2, 2], 16: [2, 2, 3, 3, 3], 19: [2, 2, 4, 4, 4]}
    cfg = []
    for width, k in zip([64, 128, 256, 512, 512], convs[depth], strict=True):
        cfg += [width] * k + ["M"]
    name = f"vgg{depth}{'bn' if bn else ''}"
    assert _count(create_model(name, in_channels=1, num_classes=10)) == _vgg_formula(cfg, bn, c=1)


def test_efficientnet_count_by_formula():
    stages = [(1, 16, 1, 3), (6, 24, 2, 3), (6, 40, 2, 5), (6, 80, 3, 3), (6, 112, 3, 5),
              (6, 192, 4, 5), (6, 320, 1, 3)]  # fmt: skip
    n, c_in = 3 * 32 * 9 + 2 * 32, 32
    for e, c_out, blocks, k in stages:
        for _ in range(blocks):
            c, se = e * c_in, int(c_in * 0.25)
            n += (c_in * c + 2 * c) if e != 1 else 0  # expansion + BN
            n += c * k * k + 2 * c  # depthwise + BN
            n += (c * se + se) + (se * c + c)  # squeeze-excitation
            n += c * c_out + 2 * c_out  # projection + BN
            c_in = c_out
    n += 320 * 10 + 10
    assert _count(create_model("efficientnetb0")) == n


def test_lenet_flatten_matches_authors():
    # authors: 16*5*5 features at 32 px, 16*4*4 at 28 px (no padding)
    assert create_model("lenet", in_channels=3).classifier.fc1.in_features == 400
    assert create_model("lenet", in_channels=1).classifier.fc1.in_features == 256


def _hook_order(net: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: order.append(name))
        for name, m in net.named_modules()
        if name and not list(m.children())
    ]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return order


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_layer_discovery_fx_and_hooks(name):
    net = create_model(name, in_channels=3, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    train_nodes, eval_nodes = get_graph_node_names(net)
    assert len(eval_nodes) > 3 and len(set(eval_nodes)) == len(eval_nodes)
    hooks = _hook_order(net, x)
    # every leaf module runs exactly once per forward (no shared activation modules) ...
    assert len(hooks) == len(set(hooks))
    leaves = {n for n, m in net.named_modules() if n and not list(m.children())}
    assert set(hooks) == leaves
    # ... and fx lists the module calls in the order in which they execute
    assert [n for n in eval_nodes if n in leaves] == hooks
    # names are readable stage/op names, not bare indices
    assert not any(part.isdigit() for n in hooks for part in n.split(".")[-1:])
    # no in-place activation would overwrite a hooked output
    assert not any(getattr(m, "inplace", False) for m in net.modules())
    # the graph's last node computes the model output
    ext = create_feature_extractor(net, return_nodes=[eval_nodes[-1]])
    with torch.no_grad():
        torch.testing.assert_close(ext(x)[eval_nodes[-1]], net(x))


def test_resnet_names_are_stage_block_op():
    _, nodes = get_graph_node_names(create_model("resnet18"))
    for n in ["conv1", "bn1", "relu1", "layer1.0.conv1", "layer1.0.add", "layer2.0.shortcut.conv",
              "layer4.1.relu2", "avgpool", "linear"]:  # fmt: skip
        assert n in nodes, n
    assert (
        nodes.index("layer1.0.conv1") < nodes.index("layer1.0.add") < nodes.index("layer2.0.conv1")
    )


@pytest.mark.parametrize(
    "kw",
    [dict(depth=1, width=3, pooling="none"), dict(depth=5, pooling="avg", activation="tanh"),
     dict(depth=3, stride=2, pooling="none", filter_size=5), dict(depth=8, width=4),
     dict(depth=2, batch_norm=True, padding=0, bias=False, padding_mode="circular")],
)  # fmt: skip
def test_simplecnn_options(kw):
    net = create_model("simplecnn", in_channels=1, num_classes=2, **kw).eval()
    with torch.no_grad():
        assert net(torch.randn(3, 1, 28, 28)).shape == (3, 2)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == kw["depth"]
    assert all(c.kernel_size == (kw.get("filter_size", 3),) * 2 for c in convs)
    act = nn.Tanh if kw.get("activation") == "tanh" else nn.ReLU
    assert sum(isinstance(m, act) for m in net.modules()) == kw["depth"]
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)]
    assert len(pools) == (0 if kw.get("pooling") == "none" else kw["depth"])


def test_simplecnn_bad_options():
    with pytest.raises(ValueError, match="pooling"):
        create_model("simplecnn", pooling="median")
    with pytest.raises(ValueError, match="activation"):
        create_model("simplecnn", activation="sigmoid")


@pytest.mark.parametrize("depth", [11, 16])
def test_vgg_width_mult_scales_every_conv(depth):
    """``width_mult`` narrows every conv by the same factor (rounded): the count is the
    formula's for the scaled widths, and a net of mult 1 is the published one."""
    convs = {11: [1, 1, 2, 2, 2], 16: [2, 2, 3, 3, 3]}
    cfg = []
    for width, k in zip([16, 32, 64, 128, 128], convs[depth], strict=True):
        cfg += [width] * k + ["M"]
    net = create_model(f"vgg{depth}bn", in_channels=1, width_mult=0.25)
    assert _count(net) == _vgg_formula(cfg, True, c=1)
    assert _count(create_model("vgg11", width_mult=1.0)) == _count(create_model("vgg11"))


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "resnet50", "efficientnetb0"])
def test_width_mult_narrows_the_cifar_families(name):
    full = create_model(name, in_channels=1)
    narrow = create_model(name, in_channels=1, width_mult=0.25)
    assert _count(narrow) < _count(full) / 8  # weights scale about as width_mult ** 2
    assert narrow(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    convs = [m for m in narrow.modules() if isinstance(m, torch.nn.Conv2d)]
    first = next(m for m in full.modules() if isinstance(m, torch.nn.Conv2d))
    assert convs[0].out_channels == round(first.out_channels / 4)
    with pytest.raises(ValueError, match="width_mult must be > 0"):
        create_model(name, width_mult=0)
