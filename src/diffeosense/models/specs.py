"""Model specs: one string names any network, a built-in one or a researcher's own.

=================================  ==========================================================
spec                               the network
=================================  ==========================================================
``vgg11`` (a registered name)      :func:`~diffeosense.models.create_model` of the registry
``torchvision:NAME``               ``torchvision.models.get_model(NAME, **kwargs)``
``timm:NAME``                      ``timm.create_model(NAME, **kwargs)`` (``pip install
                                   'diffeosense[timm]'``)
``path/to/file.py:FACTORY``        ``FACTORY(**kwargs)`` of that file (a function or a class)
``package.module:FACTORY``         ``FACTORY(**kwargs)`` of an importable module
=================================  ==========================================================

A factory is called with ``in_channels``, ``num_classes`` (and ``image_size``) only when its
signature takes them (or takes ``**kwargs``), plus the user's keyword options. torchvision
models take ``num_classes`` but always three input channels; timm models take both
(``in_chans``). ``weights=`` picks pretrained weights: for torchvision an enum name
(``DEFAULT``, ``IMAGENET1K_V1``) resolved from torch's local cache (``torch.hub.get_dir()``),
for timm ``weights=pretrained`` (its local Hugging Face cache); for either a file path holding
a state dict. Offline, a missing weights file is an error that names the file and where to
put it.

Every model built from a spec carries it (``model.diffeosense_spec``), so that results and
checkpoints record which network they measured.

>>> net = create_model("simplecnn", in_channels=1, num_classes=10, depth=1, width=4)
>>> net.diffeosense_spec
'simplecnn'
>>> create_model("torchvision:resnet18", num_classes=7).fc.out_features
7
>>> spec_kind("my_nets.py:Net"), spec_kind("my_pkg.nets:Net"), spec_kind("timm:resnet18")
('file', 'module', 'timm')
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["create_model", "spec_kind", "normalize_spec", "factory_takes", "load_weights",
           "size_option"]

_SPEC_ATTR = "diffeosense_spec"
_STD = ("in_channels", "num_classes", "image_size")


def spec_kind(spec: str) -> str:
    """``"registry"``, ``"torchvision"``, ``"timm"``, ``"file"`` or ``"module"``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a model spec is a non-empty string, got {spec!r}")
    head, colon, tail = spec.rpartition(":")
    if not colon:
        return "registry"
    if head in ("torchvision", "timm"):
        return head
    if not tail.isidentifier():
        raise ValueError(f"model spec {spec!r}: after the last ':' comes a factory name (a "
                         f"Python identifier), got {tail!r}")
    return "file" if head.endswith(".py") else "module"


def normalize_spec(spec: str) -> str:
    """The spec with a factory file's path made absolute (what a checkpoint records, so that
    it rebuilds from another working directory); other specs unchanged.

    >>> normalize_spec("vgg11")
    'vgg11'
    """
    if spec_kind(spec) != "file":
        return spec
    path, _, name = spec.rpartition(":")
    return f"{Path(path).expanduser().resolve()}:{name}"


def size_option(spec: str, sample_shape, model_kwargs: dict[str, Any]) -> dict[str, int]:
    """``{"image_size": W}`` for samples ``[C, H, W]`` (images) when the model takes it and
    ``model_kwargs`` does not set it, else ``{}``: a registered net whose options name it (fc2,
    lenet: their first linear layer depends on it) or any other spec (:func:`create_model`
    hands it only to factories that take it; torchvision and timm nets adapt to the size
    themselves). The rule by which ``train``, ``measure --model`` and the zoo build nets.

    >>> size_option("lenet", (1, 12, 12), {}), size_option("resnet18", (3, 32, 32), {})
    ({'image_size': 12}, {'image_size': 32})
    >>> size_option("lenet", (1, 64), {}), size_option("lenet", (1, 12, 12), {"image_size": 8})
    ({}, {})
    """
    if len(sample_shape) != 3 or "image_size" in model_kwargs:
        return {}
    if spec_kind(spec) == "registry":
        from ._registry import list_models, model_options

        if spec.lower() in list_models():
            options = model_options(spec)
            if options is not None and "image_size" not in options:
                return {}
    return {"image_size": int(sample_shape[-1])}


def factory_takes(fn: Callable, name: str) -> bool:
    """Whether ``fn`` (a function or a class) accepts the keyword ``name``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def create_model(spec: str, in_channels: int = 3, num_classes: int = 10,
                **kwargs: Any) -> nn.Module:
    """The network named by ``spec`` (see the module docstring), built on the CPU.

    Args:
        spec: a registered name, ``torchvision:NAME``, ``timm:NAME``, ``FILE.py:FACTORY`` or
            ``package.module:FACTORY``.
        in_channels, num_classes: what the data needs; passed on where the model takes them.
        kwargs: the model's own options (``--model-kw``); ``weights=`` for pretrained weights.

    Raises ValueError naming the spec for an unknown name, a missing factory, a library that
    is not installed (with its install command) or weights that cannot be found offline.
    """
    kind = spec_kind(spec)
    if kind == "registry":
        from ._registry import create_model as create_registered

        model = create_registered(spec, in_channels=in_channels, num_classes=num_classes,
                                  **kwargs)
    elif kind == "torchvision":
        model = _torchvision(spec.partition(":")[2], num_classes, kwargs)
    elif kind == "timm":
        model = _timm(spec.partition(":")[2], in_channels, num_classes, kwargs)
    else:
        model = _factory(spec, kind, in_channels, num_classes, kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model spec {spec!r} gave a {type(model).__name__}, not an nn.Module")
    setattr(model, _SPEC_ATTR, spec)
    return model


def _torchvision(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision.models as tvm

    if name not in tvm.list_models():
        import difflib

        close = difflib.get_close_matches(name, tvm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"torchvision has no model {name!r}.{hint} See "
                         f"torchvision.models.list_models().")
    kwargs = dict(kwargs)
    kwargs.pop("image_size", None)  # torchvision nets adapt to the input size themselves
    weights = kwargs.pop("weights", None)
    file = _weights_file(weights)
    if weights is None or file is not None:
        model = tvm.get_model(name, num_classes=num_classes, **kwargs)
        if file is not None:
            load_weights(model, file, f"torchvision:{name}")
        return model
    enum = tvm.get_model_weights(name)
    try:
        w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ValueError(f"torchvision:{name} has no weights {weights!r}; its weights: "
                         f"{['DEFAULT', *enum.__members__]}, or a file path") from None
    n_out = len(w.meta.get("categories") or []) or None
    if n_out is not None and num_classes != n_out:
        import warnings

        warnings.warn(f"torchvision:{name} with weights {w} keeps the {n_out}-class head they "
                      f"were trained with (the data has {num_classes} classes)", stacklevel=3)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if not cached.is_file():
        try:
            return tvm.get_model(name, weights=w, **kwargs)
        except OSError as e:  # URLError, no network
            raise ValueError(
                f"the weights {w} of torchvision:{name} are not in torch's cache and cannot "
                f"be downloaded ({type(e).__name__}: {e}). Put {Path(w.url).name} (from "
                f"{w.url}) at {cached}, or give weights=FILE") from None
    return tvm.get_model(name, weights=w, **kwargs)


def _timm(name: str, in_channels: int, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ValueError(f"timm:{name} needs the timm library: pip install 'diffeosense[timm]' "
                         f"(or pip install timm)") from None
    if not timm.list_models(name) and not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"timm has no model {name!r}.{hint} See timm.list_models().")
    kwargs = dict(kwargs)
    kwargs.pop("image_size", None)
    weights = kwargs.pop("weights", None)
    file = _weights_file(weights)
    opts = {"in_chans": in_channels, "num_classes": num_classes, **kwargs}
    if weights is None or file is not None:
        model = timm.create_model(name, pretrained=False, **opts)
        if file is not None:
            load_weights(model, file, f"timm:{name}")
        return model
    if weights not in ("pretrained", "DEFAULT", True):
        raise ValueError(f"timm:{name}: weights must be 'pretrained' (timm's own, from its "
                         f"local cache) or a file path, got {weights!r}")
    try:
        return timm.create_model(name, pretrained=True, **opts)
    except Exception as e:  # noqa: BLE001 - offline: huggingface_hub raises many types
        raise ValueError(
            f"the pretrained weights of timm:{name} are not in the local Hugging Face cache "
            f"and cannot be downloaded ({type(e).__name__}: {str(e).splitlines()[0]}). "
            f"Download them where you are online (HF_HOME names the cache), or give "
            f"weights=FILE") from None


def _weights_file(weights: Any) -> Path | None:
    """``weights`` as a file path, when it names one (``.pt``, ``.pth``, ``.safetensors`` or
    an existing file)."""
    if not isinstance(weights, str | Path):
        return None
    p = Path(weights).expanduser()
    if p.is_file():
        return p
    if p.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        raise ValueError(f"weights file {p} not found")
    return None


def load_weights(model: nn.Module, path: str | Path, what: str) -> nn.Module:
    """Load a state dict file into ``model`` (strictly): a plain ``state_dict``, or one under
    ``"state_dict"`` / ``"model_state"`` / ``"model"`` (a training checkpoint), or
    ``.safetensors``. A mismatch is a ValueError naming the missing and unexpected keys."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot read weights {path} as a state dict ({type(e).__name__}:"
                             f" {str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in
                                              state.values()):
        raise ValueError(f"{path} does not hold a state dict (name -> tensor)")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ
        lines = [ln.strip() for ln in str(e).splitlines()[1:4] if ln.strip()]
        raise ValueError(f"weights {path} do not fit {what}: {'; '.join(lines)}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights {path} do not fit {what}: missing {result.missing_keys[:5]}"
                         f", unexpected {result.unexpected_keys[:5]}")
    return model


def _import_factory(spec: str, kind: str) -> Callable:
    where, _, name = spec.rpartition(":")
    if kind == "file":
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"model spec {spec!r}: no file {path}")
        # A module name unique to the file, so that two files both called nets.py coexist.
        mod_name = f"_diffeosense_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        module = sys.modules.get(mod_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"model spec {spec!r}: cannot import {where!r} ({e}); is it on "
                             f"PYTHONPATH (or installed)?") from None
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        names = sorted(n for n, v in vars(module).items() if callable(v) and
                       not n.startswith("_") and getattr(v, "__module__", "") == module.__name__)
        raise ValueError(f"model spec {spec!r}: {where} has no callable {name!r}; it defines "
                         f"{names}")
    return fn


def _factory(spec: str, kind: str, in_channels: int, num_classes: int,
             kwargs: dict[str, Any]) -> nn.Module:
    fn = _import_factory(spec, kind)
    std = {"in_channels": in_channels, "num_classes": num_classes}
    if "image_size" in kwargs and not factory_takes(fn, "image_size"):
        kwargs = {k: v for k, v in kwargs.items() if k != "image_size"}
    call = {**{k: v for k, v in std.items() if factory_takes(fn, k)}, **kwargs}
    try:
        return fn(**call)
    except TypeError as e:
        raise ValueError(f"model spec {spec!r}: {e} (called with {call})") from None
