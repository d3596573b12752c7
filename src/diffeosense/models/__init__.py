"""The paper's architectures, created by name: ``create_model(name, in_channels, num_classes)``."""

from ._registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
