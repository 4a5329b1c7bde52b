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


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: np.ma.masked_array(x), "is a numpy masked array; pass its data and its mask as 'ignore_mask'"),
        (lambda x: x.astype(np.longdouble), "must be a numeric array of a dtype torch reads"),
        (lambda x: np.zeros(x.shape, [("a", "f4"), ("b", "f4")]), r"must be a plain \(not structured\) array"),
        (lambda x: torch.from_numpy(x).to_sparse(), r"must be a dense \(strided\) tensor, got layout torch.sparse_coo"),
        (lambda x: torch.empty(x.shape, device="meta"), "is on the meta device, which holds no data"),
    ],
)
def test_unsupported_arrays_are_type_errors_naming_op_and_argument(make, message):
    x = np.random.default_rng(3).normal(size=(1, 4, 8, 8)).astype(np.float32)
    for op in (lambda a: fastral.region_stats(a, 4, 2), lambda a: fastral.bald(a[None])):
        with pytest.raises(TypeError, match=message):
            op(make(x))


def test_negative_bit_views_and_read_only_arrays_are_read_as_their_values():
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(1, 4, 8, 8)).astype(np.float32))
    neg = torch._neg_view(x)  # a view that reads as -x through a bit, not through its memory
    assert neg.is_neg()
    expected = fastral.region_stats(-x, 4, 2)
    for got, want in zip(fastral.region_stats(neg, 4, 2), expected, strict=True):
        assert torch.equal(got, want)
    frozen = (-x).numpy().copy()
    frozen.flags.writeable = False  # no "not writable" warning: the ops never write their inputs (warnings = errors)
    np.testing.assert_array_equal(fastral.region_stats(frozen, 4, 2).counts, expected.counts.numpy())


def test_probabilities_passed_as_logits_warn_once_per_op(monkeypatch):
    monkeypatch.setattr("fastral.ops._common._warned_probabilities", set())
    p = np.random.default_rng(5).dirichlet(np.ones(4), size=(2, 8, 8)).transpose(0, 3, 1, 2).astype(np.float32)
    for op in (lambda a: fastral.region_stats(a, 4, 2), lambda a: fastral.bald(a[None])):
        with pytest.warns(UserWarning, match="look like probabilities .* pass from_logits=False"):
            op(p)
        op(p)  # once per op: this call is silent (warnings are errors here)
    fastral.region_stats(p, 4, 2, from_logits=False)
    logits = np.log(p)  # the same pixels as logits: no warning
    monkeypatch.setattr("fastral.ops._common._warned_probabilities", set())
    fastral.region_stats(logits, 4, 2)


def test_region_grid_validates_its_arguments():
    assert fastral.region_grid(10, 7, 3) == (3, 2) and fastral.region_grid(np.int64(8), 8, (4, 2)) == (2, 4)
    with pytest.raises(ValueError, match="region_grid: argument 'width' must be >= 0, got -1"):
        fastral.region_grid(10, -1, 3)
    with pytest.raises(TypeError, match=r"region_grid: argument 'height' must be an int, got 2\.5"):
        fastral.region_grid(2.5, 4, 2)
    with pytest.raises(ValueError, match="region_grid: argument 'region' must be positive"):
        fastral.region_grid(8, 8, (0, 2))


def test_cupy_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    if not cupy.cuda.is_available():
        pytest.skip("CuPy is installed but no CUDA device is available")
    x = cupy.random.standard_normal((1, 5, 32, 32), dtype=cupy.float32)
    out = fastral.region_stats(x, (16, 16), (4, 4))
    assert isinstance(out.counts, cupy.ndarray)
    expected = fastral.region_stats(cupy.asnumpy(x), (16, 16), (4, 4))
    np.testing.assert_array_equal(cupy.asnumpy(out.counts), expected.counts)
