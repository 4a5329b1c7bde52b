"""The CUDA module where no GPU runs it: it is built wherever nvcc is, imports, checks its arguments, and a kernel
call without a usable GPU raises a clear Python exception instead of crashing. Kernel results are checked by the
parity suites on a GPU (FASTRAL_TEST_DEVICE=cuda; bench/gpu_check.py runs them)."""

import importlib
import importlib.util
import os
import shutil

import pytest
import torch

import fastral
from fastral.ops import _cuda

KERNELS = ("region_stats", "kl_histogram", "bald_stacked", "bald_update", "bald_finalize")


def _cuda_module():
    """fastral._C_cuda, or a skip saying why it cannot be here."""
    if importlib.util.find_spec("fastral._C_cuda") is None:
        if shutil.which("nvcc") is None:
            pytest.skip("nvcc is not on PATH: fastral._C_cuda is built only where a CUDA toolkit is found")
        if os.environ.get("FASTRAL_SKIP_EXT") == "1" or os.environ.get("FASTRAL_CUDA") == "0":
            pytest.skip("the CUDA module was switched off (FASTRAL_SKIP_EXT=1 or FASTRAL_CUDA=0)")
        pytest.fail("nvcc is on PATH but fastral._C_cuda was not built: reinstall with FASTRAL_STRICT_BUILD=1 for why")
    return importlib.import_module("fastral._C_cuda")


def _no_usable_gpu(mod) -> str:
    """The module's reason why it cannot use a GPU here, or a skip where it can (the parity suites cover that)."""
    try:
        count = mod.device_count()
    except RuntimeError as exc:
        return str(exc)
    if count:
        pytest.skip(f"{count} CUDA device(s) usable here: kernel calls are covered by the GPU parity suites")
    return "no CUDA device"


def test_cuda_module_imports_and_lists_its_kernels():
    mod = _cuda_module()
    for name in (*KERNELS, "device_count", "kl_histogram_workspace_bytes", "bald_stacked_workspace_bytes"):
        assert callable(getattr(mod, name)), name


def test_kernel_call_without_a_gpu_raises_a_clear_error():
    mod = _cuda_module()
    reason = _no_usable_gpu(mod)
    assert reason.startswith("fastral._C_cuda: ") and "CUDA" in reason, reason
    # Well-formed arguments reach the first CUDA call, which fails before any address is used.
    fake = 1 << 20
    with pytest.raises(RuntimeError, match=r"fastral\._C_cuda: cannot use CUDA device 0: "):
        mod.bald_finalize((fake, fake, 2, 1, 3, 4, 4, fake, fake), 0, 0)
    with pytest.raises(RuntimeError, match=r"fastral\._C_cuda: cannot use CUDA device 0: "):
        mod.region_stats((fake, 0, 1, 3, 8, 8, 0, 4, 4, 2, 2, True, fake, fake, fake), fake, 0, 0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.region_stats((256, 0, 1, 3, 8, 8, 0, 16, 4, 2, 2, True, 256, 256, 256), 256, 0, 0), "larger than"),
        (lambda m: m.region_stats((256, 5, 1, 3, 8, 8, 0, 4, 4, 2, 2, True, 256, 256, 256), 256, 0, 0), "dtype code"),
        (lambda m: m.region_stats((256, 0, 1, 3, 8, 8, 0, 4, 4, 8, 2, True, 256, 256, 256), 256, 0, 0), "more cells"),
        (lambda m: m.bald_update((0, 0, 1, 1, 3, 8, 8, False, True, True, 256, 256), 256, 0, 0), "'x' is a null"),
        (
            lambda m: m.bald_update((258, 0, 1, 1, 3, 8, 8, False, True, True, 256, 256), 256, 0, 0),
            "'x' is not aligned",
        ),
        (lambda m: m.bald_update((256, 0, 1, 1, 3, 8, 8, True, True, True, 256, 256), 256, 0, 0), "sample_last"),
        (lambda m: m.bald_finalize((256, 256, 0, 1, 3, 4, 4, 256, 256), 0, 0), "T and C must be >= 1"),
        (
            lambda m: m.kl_histogram((256, 2, 256, 3, 4, 8, True, 0, 0, True, 1e-7, 256), 256, 1 << 20, 0, 0),
            "exclude_self",
        ),
        (
            lambda m: m.kl_histogram((256, 2, 256, 3, 4, 8, False, 1, 1, False, 1e-7, 256), 256, 1 << 20, 0, 0),
            "lo < hi",
        ),
        (lambda m: m.kl_histogram_workspace_bytes(2, 3, 4, 0), "bins must be >= 1"),
    ],
)
def test_bad_arguments_are_value_errors_before_any_cuda_call(call, message):
    mod = _cuda_module()
    with pytest.raises(ValueError, match=message):
        call(mod)


def test_kl_workspace_covers_the_full_workload():
    """The one allocation of the KL launcher: small next to the M x N matrix it avoids (34 GB here)."""
    nbytes = _cuda_module().kl_histogram_workspace_bytes(25_600, 335_000, 20, 32)
    assert 4 * 20 * (25_600 + 335_000) < nbytes < 64 * 2**20


def test_cuda_backend_refuses_cpu_inputs_with_the_reason():
    match = "backend 'cuda' runs on CUDA inputs only"
    with pytest.raises(fastral.BackendUnavailableError, match=match):
        fastral.region_stats(torch.randn(1, 3, 8, 8), (4, 4), (2, 2), backend="cuda")
    with pytest.raises(fastral.BackendUnavailableError, match=match):
        fastral.kl_histogram(torch.rand(2, 3), torch.rand(4, 3), backend="cuda")
    with pytest.raises(fastral.BackendUnavailableError, match=match):
        fastral.bald(torch.randn(2, 1, 3, 4, 4), backend="cuda")
    with pytest.raises(fastral.BackendUnavailableError, match=match):
        fastral.BaldAccumulator(backend="cuda").update(torch.randn(1, 3, 4, 4))


def test_launchers_exist_for_every_kernel():
    for name in KERNELS:
        assert callable(getattr(_cuda, name)), name


def test_empty_calls_return_without_touching_the_gpu():
    """The contract's edge cases are the CPU module's: an empty batch is a no-op, even without a usable GPU."""
    mod = _cuda_module()
    assert mod.region_stats((0, 0, 0, 3, 8, 8, 0, 4, 4, 2, 2, True, 0, 0, 0), 0, 0, 0) == 0
    assert mod.bald_stacked((0, 0, 2, 0, 3, 4, 5, False, True, 0, 0), 0, 0, 0, 0, 0) == 0
    assert mod.bald_update((0, 0, 1, 0, 3, 4, 5, False, True, True, 0, 0), 0, 0, 0) == 0
    mod.bald_finalize((0, 0, 2, 0, 3, 4, 4, 0, 0), 0, 0)
    mod.kl_histogram((0, 0, 0, 0, 3, 8, True, 0.0, 0.0, False, 1e-7, 0), 0, 0, 0, 0)
