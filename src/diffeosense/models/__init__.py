"""The paper's architectures and any other network, created from a spec string:
``create_model(spec, in_channels, num_classes, **options)`` (a registered name,
``torchvision:NAME``, ``timm:NAME``, ``FILE.py:FACTORY``, ``package.module:FACTORY``; see
:mod:`diffeosense.models.specs`)."""

from ._registry import list_models, register_model
from .specs import create_model, load_weights, normalize_spec, spec_kind

__all__ = ["create_model", "list_models", "register_model", "spec_kind", "normalize_spec",
           "load_weights"]

# Model families register themselves on import.
from . import alexnet, cnn1d, efficientnet, fc, lenet, resnet, simplecnn, vgg  # noqa: E402, F401
