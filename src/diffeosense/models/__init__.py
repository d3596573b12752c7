"""The paper's architectures, created by name: ``create_model(name, in_channels, num_classes)``."""

from ._registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]

# Model families register themselves on import.
from . import alexnet, cnn1d, efficientnet, fc, lenet, resnet, simplecnn, vgg  # noqa: E402, F401
