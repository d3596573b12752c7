"""Datasets as in-memory tensors: CIFAR-10, MNIST, Fashion-MNIST, SVHN, the embedded MNIST.

``load_dataset(DataConfig(...))`` returns an :class:`ImageDataset` whose ``batches(...)``
serves sliced batches with batched augmentation and the paper's Gaussian corruption.
"""

from .datasets import (
    DataConfig,
    ImageDataset,
    default_data_root,
    gaussian_corruption,
    list_datasets,
    load_dataset,
    random_crop_flip,
    subset_indices,
)
from .scale_detection import (  # importing registers the "pixel-move" perturbation
    ActivePixelMove,
    ScaleDetectionConfig,
    ScaleDetectionData,
    active_positions,
    label_pairs,
    make_scale_detection,
)

__all__ = [
    "DataConfig",
    "ImageDataset",
    "default_data_root",
    "gaussian_corruption",
    "list_datasets",
    "load_dataset",
    "random_crop_flip",
    "subset_indices",
    "ActivePixelMove",
    "ScaleDetectionConfig",
    "ScaleDetectionData",
    "active_positions",
    "label_pairs",
    "make_scale_detection",
]
