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

__all__ = [
    "DataConfig",
    "ImageDataset",
    "default_data_root",
    "gaussian_corruption",
    "list_datasets",
    "load_dataset",
    "random_crop_flip",
    "subset_indices",
]
