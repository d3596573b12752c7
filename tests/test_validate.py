"""Config validation: the library and the CLI refuse the same bad values, with the same words.

Every float option must be a finite number in range: ``nan`` slips through ``x < 0`` tests
(every comparison with NaN is False), which is how ``--noise nan`` used to train without noise
and record ``"noise": NaN``.
"""

from __future__ import annotations

import math

import pytest

from diffeosense._validate import check_float, check_types
from diffeosense.data import DataConfig
from diffeosense.data.scale_detection import ScaleDetectionConfig
from diffeosense.experiments.scale_detection import ScaleDetectionExperiment
from diffeosense.perturbations import MaxEntDiffeo, as_perturbation
from diffeosense.train import TrainConfig

NAN, INF = math.nan, math.inf

# (config class, field, bad value, words of the error)
BAD = [
    (DataConfig, "noise", NAN, "DataConfig.noise must be a finite number >= 0"),
    (DataConfig, "noise", INF, "DataConfig.noise must be a finite number >= 0"),
    (DataConfig, "noise", -1.0, "DataConfig.noise must be a finite number >= 0"),
    (DataConfig, "noise", "abc", "DataConfig.noise must be a finite number >= 0, got .abc."),
    (DataConfig, "P", 2.5, "DataConfig.P must be int or None"),
    (TrainConfig, "lr", NAN, "TrainConfig.lr must be a finite number > 0"),
    (TrainConfig, "lr", INF, "TrainConfig.lr must be"),
    (TrainConfig, "lr", 0.0, "TrainConfig.lr must be a finite number > 0"),
    (TrainConfig, "momentum", NAN, "TrainConfig.momentum must be a finite number >= 0 and < 1"),
    (TrainConfig, "momentum", 1.5, "TrainConfig.momentum must be a finite number >= 0 and < 1"),
    (TrainConfig, "weight_decay", -1e-4, "TrainConfig.weight_decay must be a finite number >= 0"),
    (TrainConfig, "weight_decay", NAN, "TrainConfig.weight_decay must be"),
    (TrainConfig, "epochs", "3", "TrainConfig.epochs must be int"),
    (TrainConfig, "device", "tpu", "device must be cpu, cuda, cuda:N, mps or auto"),
    (MaxEntDiffeo, "displacement", NAN, "MaxEntDiffeo.displacement must be a finite number"),
    (MaxEntDiffeo, "T", -1.0, "MaxEntDiffeo.T must be a finite number >= 0"),
    (MaxEntDiffeo, "cut", "abc", "MaxEntDiffeo.cut must be int"),
    (MaxEntDiffeo, "interp", "cubic", "interp must be one of"),
    (ScaleDetectionConfig, "xi", NAN, "ScaleDetectionConfig.xi must be a finite number > 0"),
    (ScaleDetectionConfig, "gap", INF, "ScaleDetectionConfig.gap must be"),
    (ScaleDetectionConfig, "amplitude", NAN, "ScaleDetectionConfig.amplitude must be"),
    (ScaleDetectionExperiment, "lr", NAN, "ScaleDetectionExperiment.lr must be a finite"),
    (ScaleDetectionExperiment, "momentum", -0.1, "ScaleDetectionExperiment.momentum must be"),
    (ScaleDetectionExperiment, "xi", INF, "ScaleDetectionExperiment.xi must be"),
    (ScaleDetectionExperiment, "width", "abc", "ScaleDetectionExperiment.width must be int"),
    (ScaleDetectionExperiment, "epochs", 0, "ScaleDetectionExperiment.epochs must be >= 1"),
]


@pytest.mark.parametrize("cls, field, value, words", BAD,
                         ids=[f"{c.__name__}.{f}={v!r}" for c, f, v, _ in BAD])  # fmt: skip
def test_config_classes_refuse_bad_values(cls, field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        cls(**{field: value})


def test_good_values_pass_unchanged():
    # ints where floats are wanted, None where optional: accepted and kept as given (the
    # saved config and its hash do not change)
    assert DataConfig(noise=0).noise == 0 and isinstance(DataConfig(noise=0).noise, int)
    assert TrainConfig(lr=None, momentum=0, weight_decay=0).momentum == 0
    assert MaxEntDiffeo(cut=3, displacement=1, T=None).displacement == 1
    assert check_float("X", "y", 2, lo=0, hi=2) == 2.0
    with pytest.raises(ValueError, match=r"X.y must be a finite number >= 0 and < 2, got 2"):
        check_float("X", "y", 2, lo=0, hi=2, hi_open=True)
    with pytest.raises(ValueError, match="X.y must be a finite number, got True"):
        check_float("X", "y", True)  # a bool is not a number here


def test_check_types_ignores_annotations_it_cannot_check():
    from dataclasses import dataclass

    @dataclass
    class C:
        shape: tuple[int, ...] = (1,)
        scale: float = 1.0

    check_types(C(shape=("any",)))  # tuples are not checked
    with pytest.raises(ValueError, match=r"C.scale must be a finite number, got nan"):
        check_types(C(scale=NAN))


def test_perturbation_spec_strings_are_validated():
    with pytest.raises(ValueError, match=r"bad options for perturbation 'diffeo' \(in "
                       r"'diffeo:cut=abc'\): MaxEntDiffeo.cut must be int, got 'abc'"):
        as_perturbation("diffeo:cut=abc")
    with pytest.raises(ValueError, match="MaxEntDiffeo.displacement must be a finite"):
        as_perturbation("diffeo:displacement=nan")  # a bare string: refused as a number
    assert as_perturbation("diffeo:cut=5,displacement=0.5") == MaxEntDiffeo(5, 0.5)


def test_model_options_are_checked_against_the_signature():
    from diffeosense.models import create_model

    with pytest.raises(ValueError, match=r"model 'simplecnn': option depth='abc' must be int "
                       r"\(default 4\)"):  # fmt: skip
        create_model("simplecnn", in_channels=1, depth="abc")
    with pytest.raises(ValueError, match=r"unknown options for model 'lenet': \['depth'\]; "
                       r"its options: \['image_size', 'in_channels', 'num_classes'\]"):
        create_model("lenet", in_channels=1, depth=3)
    with pytest.raises(ValueError, match="option batch_norm=1 must be bool"):
        create_model("vgg11", batch_norm=1)
