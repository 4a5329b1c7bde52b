"""Shared test set-up: Triton's interpreter on a machine without a GPU, poisoned outputs, seeded generators.

The helpers themselves (device under test, backends, tolerances, input generators) are in :mod:`fastral.testing`,
which documents the environment variables (FASTRAL_TEST_DEVICE, FASTRAL_REQUIRE_BACKENDS, FASTRAL_TEST_SEED).
"""

import os

import torch

# Triton's interpreter must be chosen before any module defining @triton.jit kernels is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from fastral import testing


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "sanitizer: a small parity test that reaches every kernel path (bench/gpu_check.py runs these "
        "under compute-sanitizer)",
    )


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every op output starts as NaN / INT32_MIN, so an element a kernel forgot to write fails a test."""
    with testing.poisoned_outputs():
        yield


@pytest.fixture
def device():
    return testing.DEVICE


@pytest.fixture
def rng():
    """A generator per test, from a fresh seed each run (printed, so a failure shows it) or FASTRAL_TEST_SEED."""
    seed = testing.input_seed()
    print(f"random seed: {seed} (replay with FASTRAL_TEST_SEED={seed})")
    return torch.Generator().manual_seed(seed)
