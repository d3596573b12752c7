"""Model specs (diffeosense.models.specs) and model files (diffeosense.models.files): each
source builds the network of the library call it stands for, files load back the same
network, and every bad spec is one clear error."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import pytest
import torch
import torchvision.models as tvm
from _nets import NET_PY
from torch import nn

from diffeosense import measure
from diffeosense.models import create_model, load_weights, normalize_spec, spec_kind
from diffeosense.models.files import FrozenProgram, file_kind, load_model_file


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _seeded(fn, seed=0):
    torch.manual_seed(seed)
    return fn()


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(NET_PY)
    return path


def _module_of(path):
    spec = importlib.util.spec_from_file_location("direct_mynet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spec_kinds_and_malformed_specs():
    assert [spec_kind(s) for s in ("vgg11", "torchvision:vgg11", "timm:vit_tiny_patch16_224",
                                   "a/b/net.py:Net", "pkg.mod:make")] == [
        "registry", "torchvision", "timm", "file", "module"]
    with pytest.raises(ValueError, match="factory name"):
        spec_kind("net.py:not-a-name")
    with pytest.raises(ValueError, match="non-empty string"):
        spec_kind("")


def test_torchvision_spec_is_the_torchvision_model():
    ours = _seeded(lambda: create_model("torchvision:resnet18", in_channels=3, num_classes=7))
    theirs = _seeded(lambda: tvm.get_model("resnet18", num_classes=7))
    assert _same_weights(ours, theirs) and ours.diffeosense_spec == "torchvision:resnet18"
    with pytest.raises(ValueError, match="torchvision has no model 'resnet181'.*resnet18"):
        create_model("torchvision:resnet181")
    with pytest.raises(ValueError, match="has no weights 'IMAGENET9'"):
        create_model("torchvision:resnet18", weights="IMAGENET9")


def test_torchvision_weights_come_from_the_cache_or_say_where_to_put_them(tmp_path,
                                                                         monkeypatch):
    import torchvision.models._api as api

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, *a, **k):
        raise OSError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    w = tvm.ResNet18_Weights.DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / w.url.rsplit("/", 1)[1]
    with pytest.raises(ValueError, match=rf"Put {cached.name} .* at {cached}"):
        create_model("torchvision:resnet18", weights="DEFAULT", num_classes=1000)
    # The file in the cache: loaded from there (torchvision's own loader, no download).
    state = _seeded(lambda: tvm.resnet18(), 3).state_dict()
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    monkeypatch.setattr(api, "load_state_dict_from_url",
                        lambda url, *a, **k: torch.load(cached, weights_only=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = create_model("torchvision:resnet18", weights="DEFAULT", num_classes=10)
    assert any("keeps the 1000-class head" in str(c.message) for c in caught)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    # weights=FILE: a state dict file, strictly loaded.
    other = tmp_path / "w.pt"
    torch.save(state, other)
    again = create_model("torchvision:resnet18", weights=str(other), num_classes=1000)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="do not fit torchvision:resnet18"):
        create_model("torchvision:resnet18", weights=str(other), num_classes=10)


def test_timm_spec(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ValueError, match=r"pip install 'diffeosense\[timm\]'"):
        create_model("timm:resnet18")
    monkeypatch.undo()
    timm = pytest.importorskip("timm")
    ours = _seeded(lambda: create_model("timm:resnet18", in_channels=1, num_classes=5))
    theirs = _seeded(lambda: timm.create_model("resnet18", in_chans=1, num_classes=5))
    assert _same_weights(ours, theirs)


def test_file_and_module_factories(net_file, monkeypatch):
    mod = _module_of(net_file)
    ours = _seeded(lambda: create_model(f"{net_file}:Net", in_channels=2, num_classes=3,
                                        width=5, image_size=28))  # image_size: not taken
    theirs = _seeded(lambda: mod.Net(in_channels=2, num_classes=3, width=5))
    assert _same_weights(ours, theirs) and ours.fc.out_features == 3
    # A factory that takes neither in_channels nor num_classes gets only its own options.
    assert create_model(f"{net_file}:plain", in_channels=2, num_classes=3, width=4)[1] \
        .out_features == 4
    monkeypatch.syspath_prepend(str(net_file.parent))
    by_module = _seeded(lambda: create_model("mynet:Net", in_channels=2, num_classes=3,
                                             width=5))
    assert _same_weights(by_module, theirs)
    assert normalize_spec(f"{net_file.name}:Net") != f"{net_file.name}:Net"
    with pytest.raises(ValueError, match=r"has no callable 'Nett'; it defines .*'Net'"):
        create_model(f"{net_file}:Nett")
    with pytest.raises(ValueError, match="no file"):
        create_model(f"{net_file.parent}/missing.py:Net")
    with pytest.raises(ValueError, match="cannot import 'no_such_pkg.mod'"):
        create_model("no_such_pkg.mod:Net")
    with pytest.raises(ValueError, match="unexpected keyword argument 'depth'"):
        create_model(f"{net_file}:Net", depth=3)


def test_load_weights_reads_plain_and_nested_state_dicts(tmp_path):
    a = _seeded(lambda: create_model("simplecnn", in_channels=1, num_classes=3, depth=1,
                                     width=4), 1)
    for i, blob in enumerate((a.state_dict(), {"state_dict": a.state_dict()})):
        torch.save(blob, tmp_path / f"w{i}.pt")
        b = create_model("simplecnn", in_channels=1, num_classes=3, depth=1, width=4)
        assert _same_weights(load_weights(b, tmp_path / f"w{i}.pt", "simplecnn"), a)
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_weights(b, tmp_path / "bad.pt", "simplecnn")


def _eager():
    return _seeded(lambda: create_model("simplecnn", in_channels=1, num_classes=10, depth=2,
                                        width=8)).eval()


def test_torchscript_and_export_files_measure_as_the_eager_model(tmp_path):
    from torch.export import Dim

    net, x = _eager(), torch.randn(24, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.jit.save(torch.jit.trace(net, x[:2]), tmp_path / "ts.pt")
    ep = torch.export.export(net, (x[:2],), dynamic_shapes=({0: Dim("batch")},))
    torch.export.save(ep, tmp_path / "ep.pt2")
    assert file_kind(tmp_path / "ts.pt") == "torchscript"
    assert file_kind(tmp_path / "ep.pt2") == "export"
    ts, ex = load_model_file(tmp_path / "ts.pt"), load_model_file(tmp_path / "ep.pt2")
    assert isinstance(ex, FrozenProgram)
    kw = dict(n_probes=24, batch_size=8, seed=3)
    eager = measure(net, x, layers="all", **kw).to_frame()
    out = eager[eager.layer == "output"][["D", "G", "R"]].to_numpy()
    for model in (ts, ex):
        got = measure(model, x, layers="all", **kw).to_frame()
        torch.testing.assert_close(
            torch.tensor(got[got.layer == "output"][["D", "G", "R"]].to_numpy()),
            torch.tensor(out), rtol=1e-5, atol=0)
    # The exported program is an fx graph: its inner layers are measured too, the same values.
    got = measure(ex, x, layers="all", **kw).to_frame()
    assert len(got) == len(eager)
    torch.testing.assert_close(torch.tensor(got.D.to_numpy()), torch.tensor(eager.D.to_numpy()),
                               rtol=1e-5, atol=1e-12)
    # TorchScript: input and output only, and saying so when asked for more.
    assert measure(ts, x, layers="all", **kw).to_frame().layer.tolist() == ["input", "output"]
    with pytest.raises(ValueError, match="TorchScript module cannot be tapped with 'fx'"):
        measure(ts, x, method="fx", **kw)


def test_state_dicts_and_pickles_are_told_apart(tmp_path):
    net = _eager()
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    torch.save(net, tmp_path / "whole.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"state dict .*--model SPEC --weights"):
        load_model_file(tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="runs code from the file.*--trust-pickle"):
        load_model_file(tmp_path / "whole.pt")
    assert _same_weights(load_model_file(tmp_path / "whole.pt", allow_pickle=True), net)
    assert file_kind(tmp_path / "junk.pt") == "unknown"
    with pytest.raises(ValueError, match="not a model file this tool reads"):
        load_model_file(tmp_path / "junk.pt")


def test_output_picks_the_tensor_and_warns_when_it_chose(net_file):
    model = create_model(f"{net_file}:TwoHeads").eval()
    x = torch.randn(16, 1, 10, 10, generator=torch.Generator().manual_seed(1))

    class Logits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)["logits"]

    kw = dict(layers="output", n_probes=16, seed=0)
    with pytest.warns(UserWarning, match=r"dict of 2 tensors \['features', 'logits'\]; "
                                         r"measuring 'features'.*--output KEY"):
        default = measure(model, x, **kw).to_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chosen: no warning
        chosen = measure(model, x, output="logits", **kw)
    direct = measure(Logits(model), x, **kw).to_frame()
    assert chosen.config["output"] == "logits"
    assert chosen.to_frame().D.tolist() == direct.D.tolist()
    assert default.D.tolist() != direct.D.tolist()
    with pytest.raises(ValueError, match=r"output='logit' is not among .*'features', 'logits'"):
        measure(model, x, output="logit", **kw)


def test_results_name_their_model():
    net = _eager()
    x = torch.randn(8, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    assert measure(net, x, layers="output", n_probes=8).config["model"] == "simplecnn"
    plain = nn.Sequential(nn.Flatten(), nn.Linear(144, 2))
    assert measure(plain, x, layers="output", n_probes=8).config["model"] == "Sequential"
    assert measure(net, x, layers="output", n_probes=8,
                   meta={"model": "mine"}).config["model"] == "mine"
