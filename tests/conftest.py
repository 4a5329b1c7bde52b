"""Shared test set-up: the device under test, the backends to compare, poisoned outputs.

Environment:
  FASTRAL_TEST_DEVICE=cuda         run the parity suites on the GPU (backends torch, triton, cuda); default cpu
                                   (backends torch, cpp, and triton in Triton's CPU interpreter).
  FASTRAL_REQUIRE_BACKENDS=cpp,... backends that must be available: CI sets it so a broken build fails instead
                                   of skipping.
"""

import os

import torch

# Triton's interpreter must be chosen before any module defining @triton.jit kernels is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

import fastral
from fastral.ops import _common

DEVICE = torch.device(os.environ.get("FASTRAL_TEST_DEVICE", "cpu"))
DEVICE_BACKENDS = {"cpu": ("torch", "cpp", "triton"), "cuda": ("torch", "triton", "cuda")}[DEVICE.type]
REQUIRED = [b for b in os.environ.get("FASTRAL_REQUIRE_BACKENDS", "").split(",") if b]


def backend_params(op: str, *, fast_only: bool = False):
    """pytest params for each backend of ``op`` on the device under test, skipped (with why) when unavailable.

    ``fast_only`` also skips Triton's CPU interpreter, for shapes too large for it (~5 ms per program).
    """
    params = []
    available = fastral.available_backends(DEVICE, op)
    for name in DEVICE_BACKENDS:
        reason = available[name]
        if not reason and fast_only and name == "triton" and DEVICE.type == "cpu":
            reason = "too large for Triton's CPU interpreter"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Fill every op output with NaN / INT32_MIN before a kernel runs, so an unwritten element fails a test."""
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture
def rng():
    """A fresh generator per test: every run draws new inputs (the seed is printed on failure)."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed: {seed}")
    return torch.Generator().manual_seed(seed)
