"""Datasets as in-memory tensors: CIFAR-10, MNIST, Fashion-MNIST, SVHN, the embedded MNIST,
and a user's own data (``folder:PATH``, ``idx:PATH``, ``PATH.npz``, ``PATH.pt``).

``load_dataset(DataConfig(...))`` returns an :class:`ImageDataset` whose ``batches(...)``
serves sliced batches with batched augmentation and the paper's Gaussian corruption. Every
dataset is named by a spec string, parsed in one place (:mod:`diffeosense.data.specs`).
"""

from .arrays import read_array_file
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
from .folder import read_image_folder
from .idx import read_idx, read_idx_folder, write_idx
from .scale_detection import (  # importing registers the "pixel-move" perturbation
    ActivePixelMove,
    ScaleDetectionConfig,
    ScaleDetectionData,
    active_positions,
    label_pairs,
    make_scale_detection,
)
from .specs import DataSpec, parse_data_spec

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
    "DataSpec",
    "parse_data_spec",
    "read_array_file",
    "read_image_folder",
    "read_idx",
    "read_idx_folder",
    "write_idx",
]
