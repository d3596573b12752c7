"""diffeosense: how deep networks lose spatial information with training.

Sample and apply maximum-entropy diffeomorphisms and matched noise, measure the sensitivities
D, G and R = D/G of any PyTorch model layer by layer, train the paper's networks, and compare
with the theory of spatial pooling.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .diffeo import (
    Diffeo,
    DiffeoFields,
    apply,
    jacobian_determinant,
    mean_squared_displacement,
    sample_fields,
    temperature_for_displacement,
    temperature_range,
    typical_displacement,
    warp,
)
from .layers import Layer, LayerTap, list_layers, select_layers
from .models import create_model, list_models, register_model
from .noise import matched_noise, sample_noise
from .perturbations import MaxEntDiffeo, Perturbation, as_perturbation, list_perturbations
from .pooling import (
    ChannelPermutation,
    FilterSpectra,
    PoolingReport,
    filter_spectra,
    laplacian_eigenbasis,
    pooling_report,
    sample_permutations,
    shuffle_channels,
)
from .probes import select_probes
from .sensitivity import MeasureConfig, SensitivityResult, aggregate, measure
from .testing import assert_diffeo_stable

__all__ = [
    "__version__",
    # diffeomorphisms
    "Diffeo",
    "DiffeoFields",
    "apply",
    "jacobian_determinant",
    "mean_squared_displacement",
    "sample_fields",
    "temperature_for_displacement",
    "temperature_range",
    "typical_displacement",
    "warp",
    # noise and perturbations
    "matched_noise",
    "sample_noise",
    "MaxEntDiffeo",
    "Perturbation",
    "as_perturbation",
    "list_perturbations",
    # sensitivities, layer by layer
    "measure",
    "MeasureConfig",
    "SensitivityResult",
    "aggregate",
    "select_probes",
    "Layer",
    "LayerTap",
    "list_layers",
    "select_layers",
    "assert_diffeo_stable",
    # spatial vs channel pooling
    "filter_spectra",
    "FilterSpectra",
    "laplacian_eigenbasis",
    "shuffle_channels",
    "sample_permutations",
    "ChannelPermutation",
    "pooling_report",
    "PoolingReport",
    # models (data, training and theory live in diffeosense.data, .train, .theory)
    "create_model",
    "list_models",
    "register_model",
]
