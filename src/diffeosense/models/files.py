"""Networks saved as files: what a ``.pt`` / ``.pt2`` holds, told apart before loading it.

=============================  ==============================================================
the file holds                 loaded as
=============================  ==============================================================
a diffeosense checkpoint       :func:`diffeosense.train.load_checkpoint` (rebuilt from its
                               model spec; its train config names the data)
a TorchScript archive          ``torch.jit.load``: measured at its input and output only
                               (a ScriptModule's inner layers cannot be tapped)
a ``torch.export`` archive     ``torch.export.load(path).module()``, frozen in the mode it
                               was exported in (export it in eval mode, with a dynamic batch
                               dimension: ``dynamic_shapes=({0: Dim("batch")},)``)
a pickled ``nn.Module``        ``torch.load(weights_only=False)``, only with
                               ``allow_pickle=True`` (unpickling runs code from the file)
a state dict                   not a network: give its architecture as a model spec and the
                               file as ``weights`` (``--model SPEC --weights FILE``)
=============================  ==============================================================

>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/net.pt"
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
>>> torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 2, 2)), path)
>>> file_kind(path)
'torchscript'
>>> loaded = load_model_file(path)
>>> bool(torch.equal(loaded(torch.ones(3, 1, 2, 2)), net(torch.ones(3, 1, 2, 2))))
True
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["file_kind", "load_model_file", "FrozenProgram"]


def file_kind(path: str | Path) -> str:
    """``"checkpoint"``, ``"torchscript"``, ``"export"``, ``"state_dict"``, ``"pickle"``
    (a pickled object other than tensors) or ``"unknown"`` (not a torch file, or damaged)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any("/code/__torch__/" in n for n in names) or any(n.endswith("/constants.pkl")
                                                               for n in names):
            return "torchscript"
        if any("serialized_exported_program" in n or n.endswith("/archive_format")
               or "/models/" in n and n.endswith(".json") for n in names):
            return "export"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        return "pickle" if "global" in str(e).lower() else "unknown"
    except Exception:  # noqa: BLE001 - a damaged or foreign file
        return "unknown"
    from ..train import CHECKPOINT_FORMAT

    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return "checkpoint"
    if isinstance(obj, dict):
        inner = next((obj[k] for k in ("state_dict", "model_state", "model")
                      if isinstance(obj.get(k), dict)), obj)
        if inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return "state_dict"
    return "unknown"


class FrozenProgram(nn.Module):
    """A ``torch.export`` program as a module whose mode cannot change: ``train()`` and
    ``eval()`` only set the flag (an exported graph is fixed in the mode it was exported
    in; ``.module()`` refuses ``eval()``)."""

    def __init__(self, program: nn.Module):
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> FrozenProgram:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor):
        return self.program(x)


def load_model_file(path: str | Path, *, allow_pickle: bool = False) -> nn.Module:
    """The network in ``path`` (TorchScript, ``torch.export`` or, with ``allow_pickle``, a
    pickled ``nn.Module``), on the CPU. A diffeosense checkpoint, a state dict or another
    file is a ValueError that says how to load it instead."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    if kind == "export":
        return FrozenProgram(torch.export.load(str(path)).module())
    if kind == "checkpoint":
        raise ValueError(f"{path} is a diffeosense checkpoint: load it with "
                         f"diffeosense.train.load_checkpoint (the CLI's --checkpoint does)")
    if kind == "state_dict":
        raise ValueError(f"{path} holds a state dict (weights without an architecture): give "
                         f"the architecture and the file, --model SPEC --weights {path} "
                         f"(library: create_model(SPEC, ...) then load_weights)")
    if kind == "pickle":
        if not allow_pickle:
            raise ValueError(f"{path} holds a pickled Python object (a whole nn.Module saved "
                             f"with torch.save(model)); unpickling it runs code from the file. "
                             f"If you trust it, pass --trust-pickle (library: "
                             f"allow_pickle=True); better, save it with torch.jit.save, "
                             f"torch.export.save, or its state_dict")
        model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, nn.Module):
            raise ValueError(f"{path} holds a pickled {type(model).__name__}, not an nn.Module")
        return model
    raise ValueError(f"{path} is not a model file this tool reads (a diffeosense checkpoint, "
                     f"TorchScript, torch.export, a state dict with --weights, or a pickled "
                     f"nn.Module), or it is damaged")
