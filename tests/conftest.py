"""Shared fixtures: seeded generators, devices and dtypes to parametrize over."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", DTYPES, ids=["f32", "f64"])


@pytest.fixture(autouse=True)
def _no_system_datasets(monkeypatch):
    """No test sees the datasets installed on the machine (``/usr/share/datasets``): CI has
    none, and a test of a missing dataset must find it missing."""
    from diffeosense.data import datasets

    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIRS", {})
