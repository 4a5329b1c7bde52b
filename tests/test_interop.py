"""Arrays in, the same kind out, without copies: numpy, torch, DLPack producers, CuPy."""

import numpy as np
import pytest
import torch

import fastral
from fastral._arrays import as_tensor
from fastral.ops._common import kernel_input


class DLPackOnly:
    """A producer that speaks only the DLPack protocol (like JAX or CuPy arrays)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_contiguous_float32_is_never_copied():
    x = np.random.default_rng(0).normal(size=(1, 5, 8, 8)).astype(np.float32)
    t = as_tensor(x, "scores", "test")
    assert t.data_ptr() == x.ctypes.data
    assert kernel_input(t).data_ptr() == x.ctypes.data
    for dtype in (torch.float16, torch.bfloat16):
        h = torch.randn(1, 5, 8, 8).to(dtype)
        assert kernel_input(h).data_ptr() == h.data_ptr()


def test_dlpack_producer_gives_torch_tensors():
    x = np.random.default_rng(1).normal(size=(2, 4, 8, 8)).astype(np.float32)
    out = fastral.region_stats(DLPackOnly(x), (4, 4), (2, 2))
    assert isinstance(out.counts, torch.Tensor)
    expected = fastral.region_stats(x, (4, 4), (2, 2))
    np.testing.assert_array_equal(out.counts.numpy(), expected.counts)


def test_numpy_views_half_precision_and_grad_tensors():
    x = np.random.default_rng(2).normal(size=(1, 4, 8, 16)).astype(np.float32)
    reference = fastral.region_stats(np.ascontiguousarray(x[..., ::-1]), (4, 4), (2, 2))
    flipped = fastral.region_stats(x[..., ::-1], (4, 4), (2, 2))  # negative strides
    np.testing.assert_array_equal(flipped.counts, reference.counts)
    half = fastral.region_stats(x.astype(np.float16), (4, 4), (2, 2))
    assert half.entropy_mean.dtype == np.float32
    t = torch.from_numpy(x).requires_grad_()
    assert fastral.region_stats(t, (4, 4), (2, 2)).counts.dtype == torch.int32


def test_non_array_inputs_are_type_errors():
    with pytest.raises(TypeError, match="'scores' must be a numpy array"):
        fastral.region_stats([[1.0]], (1, 1), (1, 1))
    with pytest.raises(TypeError, match="'p' must be a numeric array"):
        fastral.kl_histogram(np.array([["a", "b"]]), np.ones((2, 2)))


def test_cupy_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    if not cupy.cuda.is_available():
        pytest.skip("CuPy is installed but no CUDA device is available")
    x = cupy.random.standard_normal((1, 5, 32, 32), dtype=cupy.float32)
    out = fastral.region_stats(x, (16, 16), (4, 4))
    assert isinstance(out.counts, cupy.ndarray)
    expected = fastral.region_stats(cupy.asnumpy(x), (16, 16), (4, 4))
    np.testing.assert_array_equal(cupy.asnumpy(out.counts), expected.counts)
