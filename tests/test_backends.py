"""Backend availability, selection and its errors."""

import logging

import pytest
import torch

import fastral
from fastral import backends
from fastral.ops import _common
from fastral.testing import DEVICE, REQUIRED


@pytest.mark.parametrize("name", REQUIRED or ["torch"])
def test_required_backends_are_available(name):
    """CI lists the backends its build must provide (FASTRAL_REQUIRE_BACKENDS): a broken build fails here."""
    for op in backends.GPU_PREFERENCE:
        status = fastral.available_backends(DEVICE, op)[name]
        assert status, f"{op}: {name} unavailable: {status.reason}"


def test_auto_prefers_the_compiled_backend_on_cpu():
    expected = "cpp" if fastral.available_backends("cpu")["cpp"] else "torch"
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


def test_available_backends_is_false_for_an_unavailable_backend():
    status = fastral.available_backends("cpu")["cuda"]
    assert not status and not status.available
    assert status.reason.startswith("backend 'cuda' runs on CUDA inputs only")
    assert fastral.available_backends("cpu")["torch"] and str(fastral.available_backends("cpu")["torch"]) == "available"


def test_auto_warns_when_a_failed_build_leaves_only_the_reference(monkeypatch, caplog):
    backends._import.cache_clear()
    backends._auto.cache_clear()
    monkeypatch.setattr(backends.importlib, "import_module", _raise_import_error)
    try:
        with caplog.at_level(logging.INFO, logger="fastral"):
            fastral.region_stats(torch.randn(1, 3, 8, 8), (4, 4), (2, 2))
    finally:
        backends._import.cache_clear()
        backends._auto.cache_clear()
    [record] = [r for r in caplog.records if "falls back to the PyTorch reference" in r.getMessage()]
    assert record.levelno == logging.WARNING and "fastral._C could not be imported" in record.getMessage()


@pytest.mark.parametrize("module", ["fastral._C", "fastral._C_cuda"])
def test_compiled_modules_export_the_python_constants(module):
    """Status flags and dtype codes are written once in csrc/contract.h; both modules export them."""
    mod = pytest.importorskip(module)
    assert (mod.FLAG_NONFINITE, mod.FLAG_NEGATIVE, mod.FLAG_SUM_RANGE) == (
        _common.FLAG_NONFINITE,
        _common.FLAG_NEGATIVE,
        _common.FLAG_SUM_RANGE,
    )
    assert mod.DTYPE_CODES == {str(dtype).removeprefix("torch."): code for dtype, code in _common.DTYPE_CODES.items()}
