"""Generic layer taps: every internal representation of any ``nn.Module``, in forward order.

A *layer* is a node of the network graph whose value is a floating tensor with the batch as
its first dimension: the input (``"input"``, depth 0), every convolution, norm, activation,
pooling, linear, residual sum..., and the model's output (``"output"``, last). Two discovery
paths give the same names for module calls:

* ``torch.fx`` (torchvision's ``NodePathTracer``): every node, functional ops included
  (``"flatten"``, ``"add"``...). Names are torchvision's ``get_graph_node_names`` names;
  a module called twice gives ``"relu"`` then ``"relu_1"``.
* forward hooks on leaf modules, used when tracing fails (data-dependent control flow): every
  leaf-module call, named the same way.

The tap hands each requested representation to a callback *as soon as it is produced*, so an
in-place op later in the forward pass (``ReLU(inplace=True)``) cannot overwrite it, and nothing
is stored: one forward pass gathers every layer.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))
>>> tap = LayerTap(net, torch.zeros(1, 1, 4, 4))
>>> [layer.name for layer in tap.layers]
['input', '0', '1', '2', '3', 'output']
>>> seen = {}
>>> _ = tap(torch.rand(5, 1, 4, 4), lambda name, t: seen.setdefault(name, tuple(t.shape)))
>>> seen["1"], seen["output"]
((5, 2, 2, 2), (5, 3))
"""

from __future__ import annotations

import difflib
import operator
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

__all__ = ["Layer", "LayerTap", "list_layers", "select_layers"]

LayerSpec = str | Iterable[str] | Callable[["Layer"], bool]


@dataclass(frozen=True)
class Layer:
    """One tapped representation.

    Attributes:
        name: node name (``"input"``, ``"features.0"``, ``"layer1.0.relu_1"``, ``"output"``).
        depth: position in the forward pass among *all* discovered layers (input = 0), so depths
            stay comparable when only some layers are measured.
        kind: ``input | conv | norm | activation | pool | linear | add | reshape | dropout |
            other | output``.
        shape: the representation's shape for one sample (batch dimension dropped).
        module: the module's type name (``"Conv2d"``) or the function's name for functional ops.
    """

    name: str
    depth: int
    kind: str
    shape: tuple[int, ...]
    module: str = ""

    @property
    def size(self) -> int:
        """Number of components of one sample's representation."""
        n = 1
        for s in self.shape:
            n *= int(s)
        return n


_ACTIVATIONS = {"relu", "relu_", "gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu", "softplus",
                "hardtanh", "relu6", "mish", "hardswish", "softmax", "log_softmax", "selu"}
_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
          "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "mean"}


def _module_kind(m: nn.Module) -> str:
    if getattr(m, "_tap_kind", None):  # a custom module that states its kind
        return m._tap_kind
    name = type(m).__name__.lower()
    if isinstance(m, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(m, nn.Linear | nn.Bilinear | nn.LazyLinear):
        return "linear"
    if "norm" in name:
        return "norm"
    if "pool" in name:
        return "pool"
    if "dropout" in name:
        return "dropout"
    if isinstance(m, nn.Flatten | nn.Unflatten):
        return "reshape"
    if type(m).__module__ == "torch.nn.modules.activation" or name in _ACTIVATIONS:
        return "activation"
    return "other"


def _function_kind(target) -> str:
    name = getattr(target, "__name__", str(target)).lower().strip("_")
    if target in (operator.add, operator.iadd, torch.add) or name in ("add", "iadd"):
        return "add"
    if name in _ACTIVATIONS or name.rstrip("_") in _ACTIVATIONS:
        return "activation"
    if name in _POOLS or "pool" in name:
        return "pool"
    if name in ("flatten", "view", "reshape", "squeeze", "unsqueeze", "permute", "transpose",
                "contiguous"):
        return "reshape"
    if name in ("linear", "matmul"):
        return "linear"
    if "conv" in name:
        return "conv"
    if "norm" in name:
        return "norm"
    if "dropout" in name:
        return "dropout"
    return "other"


def _is_rep(value, batch: int) -> bool:
    return (isinstance(value, Tensor) and value.is_floating_point() and value.dim() >= 1
            and value.shape[0] == batch)


def _output_tensor(out, output: str | int | None = None, warn: bool = False):
    """The model's output tensor: ``out`` itself when it is a tensor; else ``out[output]``
    (a dict key, or an index into a tuple/list) when ``output`` is given; else by default
    the dict entry ``"out"`` (torchvision's convention) or the first tensor of a dict, tuple
    or list, nested outputs followed the same way. With ``warn``, a default choice among
    several tensors warns, naming them and ``output=``."""
    if isinstance(out, Tensor):
        return out
    if output is not None:
        try:
            chosen = out[output] if isinstance(out, dict) else out[int(output)]
        except (KeyError, IndexError, ValueError, TypeError):
            have = list(out) if isinstance(out, dict) else f"indices 0..{len(out) - 1}"
            raise ValueError(f"output={output!r} is not among the model's outputs: {have}"
                             ) from None
        return _output_tensor(chosen, None, warn)
    if isinstance(out, dict):
        tensors = [k for k, v in out.items() if isinstance(v, Tensor)]
        key = "out" if "out" in out else next(iter(out), None)
        if warn and len(tensors) > 1:
            warnings.warn(f"the model returns a dict of {len(tensors)} tensors {tensors}; "
                          f"measuring {key!r} (the default: 'out', else the first). Choose "
                          f"with output=KEY (CLI: --output KEY)", stacklevel=3)
        return None if key is None else _output_tensor(out[key], None, warn)
    if isinstance(out, tuple | list) and out:
        if warn and sum(isinstance(v, Tensor) for v in out) > 1:
            warnings.warn(f"the model returns a {type(out).__name__} of {len(out)} outputs; "
                          f"measuring the first. Choose with output=INDEX (CLI: --output "
                          f"INDEX)", stacklevel=3)
        return _output_tensor(out[0], None, warn)
    return None


# ---------------------------------------------------------------- fx path
_CURRENT_SINK: list[Callable[[str, Tensor], None] | None] = [None]


def _emit(name: str, value):
    """Graph hook inserted after every tapped node: hand the value to the current sink."""
    sink = _CURRENT_SINK[0]
    if sink is not None and isinstance(value, Tensor):
        sink(name, value)
    return value


def _trace_fx(model: nn.Module):
    """Trace ``model`` (eval mode) with torchvision's NodePathTracer; return (graph module, names)."""
    from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

    class _Tracer(NodePathTracer):
        # Modules flagged ``_tap_as_leaf`` (e.g. the NTK-form layers of models.cnn1d) are one
        # representation each, not the small ops inside them.
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return getattr(m, "_tap_as_leaf", False) or super().is_leaf_module(m, qualname)

    tracer = _Tracer(**_set_default_tracer_kwargs(None))
    graph = tracer.trace(model)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    return gm, dict(tracer.node_to_qualname)


class _FxTap:
    def __init__(self, model: nn.Module):
        gm, qualnames = _trace_fx(model)
        self.info: dict[str, tuple[str, str]] = {}
        self.order: list[str] = []
        nodes = list(gm.graph.nodes)
        input_dep: set[fx.Node] = set()
        for node in nodes:
            if node.op == "placeholder":
                if not input_dep:  # the first argument is the input
                    input_dep.add(node)
                continue
            if node.op in ("output", "get_attr"):
                continue
            if not any(a in input_dep for a in node.all_input_nodes):
                continue  # depends only on parameters/constants: not a representation
            input_dep.add(node)
            name = qualnames.get(node, node.name)
            if node.op == "call_module":
                mod = gm.get_submodule(node.target)
                kind, typ = _module_kind(mod), type(mod).__name__
            elif node.op == "call_method":
                kind, typ = _function_kind(node.target), str(node.target)
            else:
                kind, typ = _function_kind(node.target), getattr(node.target, "__name__",
                                                                 str(node.target))
            with gm.graph.inserting_after(node):
                new = gm.graph.call_function(_emit, (name, node))
            input_dep.add(new)
            # Everything that used the node now uses the (identical) emitted value.
            node.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
            self.info[name] = (kind, typ)
            self.order.append(name)
        gm.graph.lint()
        gm.recompile()
        self.gm = gm

    def __call__(self, x: Tensor, sink) -> object:
        prev = _CURRENT_SINK[0]
        _CURRENT_SINK[0] = sink
        try:
            return self.gm(x)
        finally:
            _CURRENT_SINK[0] = prev


# ---------------------------------------------------------------- hook path
class _HookTap:
    def __init__(self, model: nn.Module):
        self.model = model
        self.leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]
        self.info: dict[str, tuple[str, str]] = {}
        self.order: list[str] = []

    def __call__(self, x: Tensor, sink) -> object:
        counts: dict[str, int] = {}
        handles = []

        def make_hook(qual: str, mod: nn.Module):
            def hook(_m, _inp, out):
                k = counts.get(qual, 0)
                counts[qual] = k + 1
                name = qual if k == 0 else f"{qual}_{k}"
                if isinstance(out, Tensor):
                    if name not in self.info:
                        self.info[name] = (_module_kind(mod), type(mod).__name__)
                        self.order.append(name)
                    sink(name, out)
            return hook

        try:
            for qual, mod in self.leaves:
                handles.append(mod.register_forward_hook(make_hook(qual, mod)))
            return self.model(x)
        finally:
            for h in handles:
                h.remove()


class _PlainTap:
    """No inner layers: the model is called as is (a TorchScript module, which neither
    torch.fx nor forward hooks can enter). Only ``input`` and ``output`` are measured."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.info: dict[str, tuple[str, str]] = {}
        self.order: list[str] = []

    def __call__(self, x: Tensor, sink) -> object:
        return self.model(x)


class LayerTap:
    """Run a model once per batch and hand every requested layer to a callback.

    Args:
        model: any ``nn.Module`` taking one tensor ``x: [B, ...]``.
        example: a batch ``[B, ...]`` used once to discover layers and their shapes (run under
            ``no_grad``; the model's mode is not changed here: call ``model.eval()`` first if
            you want the eval-mode graph).
        method: ``"auto"`` (fx, falling back to hooks when tracing fails), ``"fx"`` or
            ``"hooks"``. A TorchScript module can be tapped at its input and output only
            (method ``"none"``, what ``"auto"`` gives it).
        output: which of several outputs is the model's output: a dict key or a tuple index
            (default: a dict's ``"out"`` or first tensor, a tuple's first; a warning when
            that choice was among several tensors).

    Attributes:
        layers: every discovered :class:`Layer`, in forward order, ``input`` first and
            ``output`` last.
        method: the path actually used.
    """

    def __init__(self, model: nn.Module, example: Tensor, method: str = "auto",
                 output: str | int | None = None):
        if method not in ("auto", "fx", "hooks", "none"):
            raise ValueError(f"method must be 'auto', 'fx', 'hooks' or 'none', got {method!r}")
        self.model, self.output = model, output
        impl = None
        if isinstance(model, torch.jit.ScriptModule) or method == "none":
            if method in ("fx", "hooks"):
                raise ValueError(f"a TorchScript module cannot be tapped with {method!r}: only "
                                 f"its input and output are measured (method='auto')")
            impl = _PlainTap(model)
            self.method = "none"
        elif method in ("auto", "fx"):
            try:
                impl = _FxTap(model)
                self.method = "fx"
            except Exception as e:  # noqa: BLE001 - any tracing failure means: use hooks
                if method == "fx":
                    raise ValueError(f"torch.fx could not trace {type(model).__name__}: {e}. "
                                     "Use method='hooks'.") from e
                warnings.warn(f"torch.fx could not trace {type(model).__name__} ({e}); "
                              "falling back to forward hooks on leaf modules", stacklevel=2)
        if impl is None:
            impl = _HookTap(model)
            self.method = "hooks"
        self._impl = impl
        batch = example.shape[0]
        shapes: dict[str, tuple[int, ...]] = {}

        def record(name: str, t: Tensor) -> None:
            if _is_rep(t, batch):
                shapes.setdefault(name, tuple(t.shape[1:]))

        with torch.no_grad():
            out = _output_tensor(impl(example, record), output, warn=True)
        if out is None or not _is_rep(out, batch):
            raise ValueError(f"{type(model).__name__} returned {type(out).__name__}; expected a "
                             f"floating tensor with the batch ({batch}) as its first dimension")
        layers = [Layer("input", 0, "input", tuple(example.shape[1:]), "")]
        for name in impl.order:
            if name in shapes and name not in ("input", "output"):
                kind, typ = impl.info[name]
                layers.append(Layer(name, len(layers), kind, shapes[name], typ))
        layers.append(Layer("output", len(layers), "output", tuple(out.shape[1:]), ""))
        self.layers: list[Layer] = layers
        self._by_name = {layer.name: layer for layer in layers}

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def __call__(self, x: Tensor, sink: Callable[[str, Tensor], None],
                 names: Iterable[str] | None = None) -> Tensor:
        """One forward pass of ``x``; ``sink(name, rep)`` for each layer in ``names`` (default all),
        in forward order, ``rep: [B, *layer.shape]``. Returns the model output."""
        wanted = set(self.names if names is None else names)
        batch = x.shape[0]
        if "input" in wanted:
            sink("input", x)

        def inner(name: str, t: Tensor) -> None:
            if name in wanted and name in self._by_name and name != "output" and \
                    _is_rep(t, batch):
                sink(name, t)

        out = _output_tensor(self._impl(x, inner), self.output)
        if "output" in wanted:
            sink("output", out)
        return out


def select_layers(layers: list[Layer], spec: LayerSpec = "all") -> list[Layer]:
    """Pick layers by ``"all"``, a kind preset, a list of names, or a predicate ``Layer -> bool``.

    String presets: ``"all"``; ``"modules"`` (input, module calls, output: what hooks see);
    a kind (``"conv"``, ``"activation"``...) or ``"kind1+kind2"`` (input and output always kept).
    A name may be a glob (``"layer1.*"``, ``fnmatch`` rules) or a regular expression
    ``"re:PATTERN"`` that must match the whole name (``"re:layer[1-4]\\..*relu"``); a pattern
    matching no layer is an error. Unknown names raise ``ValueError`` listing the valid ones.

    >>> ls = [Layer(n, i, "other", (1,)) for i, n in enumerate(["input", "a.0", "a.1", "b"])]
    >>> [l.name for l in select_layers(ls, "re:a\\.[01]")], [l.name for l in select_layers(ls, "a.*")]
    (['a.0', 'a.1'], ['a.0', 'a.1'])
    """
    if callable(spec) and not isinstance(spec, str):
        chosen = [layer for layer in layers if spec(layer)]
    elif isinstance(spec, str) and spec.startswith("re:") or _is_glob(spec):
        chosen = _match(layers, [spec])
    elif not isinstance(spec, str) and any(isinstance(n, str) and (n.startswith("re:") or
                                                                   _is_glob(n)) for n in spec):
        chosen = _match(layers, list(spec))
    elif isinstance(spec, str) and (spec in ("all", "modules") or
                                    re.fullmatch(r"[a-z]+(\+[a-z]+)*", spec) and
                                    spec not in {layer.name for layer in layers}):
        if spec == "all":
            chosen = list(layers)
        elif spec == "modules":
            chosen = [layer for layer in layers if layer.kind in ("input", "output") or
                      (layer.module[:1].isupper() and layer.kind not in ("add",))]
        else:
            kinds = set(spec.split("+"))
            valid = {"input", "conv", "norm", "activation", "pool", "linear", "add", "reshape",
                     "dropout", "other", "output"}
            if not kinds <= valid:
                raise ValueError(f"unknown layer kind(s) {sorted(kinds - valid)} in {spec!r}; "
                                 f"kinds are {sorted(valid)}, or use 'all' or a list of names")
            chosen = [layer for layer in layers if layer.kind in kinds | {"input", "output"}]
    else:
        names = [spec] if isinstance(spec, str) else list(spec)
        by_name = {layer.name: layer for layer in layers}
        bad = [n for n in names if n not in by_name]
        if bad:
            hints = {n: difflib.get_close_matches(n, by_name, n=3) for n in bad}
            hint = "; ".join(f"{n!r} (did you mean {', '.join(h)}?)" if h else repr(n)
                             for n, h in hints.items())
            raise ValueError(f"unknown layer(s): {hint}. Valid layers: {', '.join(by_name)}")
        chosen = sorted({by_name[n] for n in names}, key=lambda layer: layer.depth)
    if not chosen:
        raise ValueError(f"layer selection {spec!r} matched no layer")
    return chosen


def _is_glob(spec) -> bool:
    return isinstance(spec, str) and not spec.startswith("re:") and any(c in spec for c in "*?[")


def _match(layers: list[Layer], patterns: list[str]) -> list[Layer]:
    """The layers whose names match any of ``patterns`` (names, globs, ``re:`` expressions),
    in forward order; a pattern that matches nothing is a ValueError."""
    import fnmatch

    chosen: set[str] = set()
    for pat in patterns:
        if pat.startswith("re:"):
            try:
                rx = re.compile(pat[3:])
            except re.error as e:
                raise ValueError(f"bad regular expression in layer selection {pat!r}: {e}"
                                 ) from None
            hit = {layer.name for layer in layers if rx.fullmatch(layer.name)}
        elif _is_glob(pat):
            hit = {layer.name for layer in layers if fnmatch.fnmatchcase(layer.name, pat)}
        else:
            hit = {layer.name for layer in layers if layer.name == pat}
        if not hit:
            raise ValueError(f"layer selection {pat!r} matched no layer. Layers: "
                             f"{', '.join(layer.name for layer in layers)}")
        chosen |= hit
    return [layer for layer in layers if layer.name in chosen]


def list_layers(model: nn.Module, example: Tensor, method: str = "auto") -> list[Layer]:
    """All layers of ``model`` on inputs like ``example`` (eval-mode graph), in forward order.

    The model's train/eval modes are restored afterwards.
    """
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        return LayerTap(model, example, method).layers
    finally:
        for m, mode in modes.items():
            m.training = mode
