"""Backend availability, selection and its errors."""

import logging

import pytest
import torch
from conftest import DEVICE, REQUIRED

import fastral
from fastral import backends


@pytest.mark.parametrize("name", REQUIRED or ["torch"])
def test_required_backends_are_available(name):
    """CI lists the backends its build must provide (FASTRAL_REQUIRE_BACKENDS): a broken build fails here."""
    for op in backends.GPU_PREFERENCE:
        assert fastral.available_backends(DEVICE, op)[name] == "", f"{op}: {name} unavailable"


def test_auto_prefers_the_compiled_backend_on_cpu():
    expected = "cpp" if not fastral.available_backends("cpu")["cpp"] else "torch"
    for op in backends.GPU_PREFERENCE:
        assert backends.resolve(op, "auto", torch.device("cpu")) == expected


def test_auto_logs_its_choice_once(caplog):
    backends._auto.cache_clear()
    with caplog.at_level(logging.INFO, logger="fastral"):
        for _ in range(3):
            fastral.region_stats(torch.randn(1, 3, 8, 8), (4, 4), (2, 2))
    messages = [r.getMessage() for r in caplog.records if "region_stats on cpu" in r.getMessage()]
    assert len(messages) == 1, messages


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="'backend' must be 'auto' or one of"):
        fastral.bald(torch.randn(2, 1, 3, 4, 4), backend="numba")
    with pytest.raises(TypeError, match="'backend' must be a string"):
        fastral.bald(torch.randn(2, 1, 3, 4, 4), backend=None)


def test_gpu_backends_refuse_cpu_inputs_with_the_reason(monkeypatch):
    with pytest.raises(fastral.BackendUnavailableError, match="backend 'cuda' runs on CUDA inputs only"):
        fastral.region_stats(torch.randn(1, 3, 8, 8), (4, 4), (2, 2), backend="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(fastral.BackendUnavailableError, match="backend 'triton' needs CUDA inputs"):
        fastral.kl_histogram(torch.rand(2, 3), torch.rand(3, 3), backend="triton")


def test_missing_compiled_module_explains_itself(monkeypatch):
    backends._import.cache_clear()
    monkeypatch.setattr(backends.importlib, "import_module", _raise_import_error)
    try:
        with pytest.raises(fastral.BackendUnavailableError, match=r"fastral\._C could not be imported .*pip install"):
            fastral.region_stats(torch.randn(1, 3, 8, 8), (4, 4), (2, 2), backend="cpp")
        # The reference still runs.
        fastral.region_stats(torch.randn(1, 3, 8, 8), (4, 4), (2, 2), backend="torch")
    finally:
        backends._import.cache_clear()


def _raise_import_error(name):
    raise ImportError(f"simulated: {name} was not built")
