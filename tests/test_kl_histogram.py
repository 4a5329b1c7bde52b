"""kl_histogram: every backend against scipy.stats.entropy + np.histogram per row, and the float64 reference."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fastral
from fastral import kl_histogram, reference_kl_histogram
from fastral.testing import (
    DEVICE,
    KL_DELTA,
    assert_histogram_row_matches,
    backend_params,
    check_kl_histogram_against_scipy,
    non_contiguous,
    scipy_kl_rows,
)


def distributions(rows, C, rng, zero_fraction=0.3, dtype=torch.float32):
    """Unnormalised class distributions (counts-like scales) with exact zeros, some rows all zero."""
    x = (
        torch.rand(rows, C, generator=rng, dtype=torch.float64)
        * torch.logspace(0, 4, rows, dtype=torch.float64)[:, None]
    )
    x = torch.where(torch.rand(rows, C, generator=rng, dtype=torch.float64) < zero_fraction, 0.0, x)
    if rows > 3:
        x[rows // 3] = 0.0  # an all-zero row is the uniform distribution after the eps floor
    return x.to(dtype)


CASES = [  # (p rows (or (K, M)), N, C, bins, range, exclude_self)
    (37, 53, 11, 32, None, False),
    ((3, 17), 51, 19, 32, None, True),  # K = 3 pools against their union, self excluded
    (64, 64, 20, 32, None, True),
    (40, 97, 19, 7, (0.0, 2.0), False),  # fixed range: values above 2 are not counted
    (5, 301, 20, 33, (0.5, 30.0), False),
    (1, 1, 1, 5, None, False),  # C = 1: every KL is 0, numpy puts it in the middle bin
    (9, 1, 4, 32, None, False),  # one value per row: min == max
]


@pytest.mark.sanitizer
@pytest.mark.parametrize("backend", backend_params("kl_histogram"))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_scipy_and_numpy(backend, case, rng):
    rows, N, C, bins, value_range, exclude_self = case
    shape = rows if isinstance(rows, tuple) else (rows,)
    p = distributions(int(np.prod(shape)), C, rng).reshape(*shape, C)
    q = distributions(N, C, rng)
    out = kl_histogram(p.to(DEVICE), q.to(DEVICE), bins, value_range, exclude_self, backend=backend)
    assert tuple(out.shape) == (*shape, bins)
    check_kl_histogram_against_scipy(out, p, q, bins, value_range, exclude_self, KL_DELTA["float32"])
    ref = reference_kl_histogram(p.double(), q.double(), bins, value_range, exclude_self)
    check_kl_histogram_against_scipy(ref, p, q, bins, value_range, exclude_self, KL_DELTA["float64"])


@pytest.mark.parametrize("backend", backend_params("kl_histogram", fast_only=True))
def test_larger_pool_matches_scipy(backend, rng):
    p, q = distributions(300, 20, rng), distributions(1000, 20, rng)
    out = kl_histogram(p.to(DEVICE), q.to(DEVICE), 32, backend=backend)
    check_kl_histogram_against_scipy(out, p, q, 32, None, False, KL_DELTA["float32"])


@pytest.mark.parametrize("backend", backend_params("kl_histogram", fast_only=True))
@pytest.mark.parametrize("exclude_self", [False, True])
def test_many_bins_match_scipy(backend, exclude_self, rng):
    """20,000 bins: the cpp kernel's panels shrink from 96 rows to 48 to bound its counters' memory, so 100 rows
    make two full panels and a padded one. Bins are so narrow that many values lie within float32 rounding of an
    edge: each row is checked on its own (every bin holds the values surely in it, at most those possibly in it)."""
    p, q = distributions(100, 11, rng), distributions(100 if exclude_self else 53, 11, rng)
    out = kl_histogram(p.to(DEVICE), q.to(DEVICE), 20_000, exclude_self=exclude_self, backend=backend)
    hist = torch.as_tensor(out).cpu().double().numpy()
    for i, (h, kl) in enumerate(zip(hist, scipy_kl_rows(p, q, exclude_self), strict=True)):
        assert_histogram_row_matches(h, kl, 20_000, None, len(kl), KL_DELTA["float32"], f"row {i}")


def test_working_memory_of_a_million_bins_stays_near_the_output():
    """bins = 10**6 for one row: the output is 3.8 MiB; the cpp kernel once kept 96 rows of counters per thread
    (+370 MiB). Measured in a fresh process: ru_maxrss is a high-water mark."""
    cpp = fastral.available_backends(torch.device("cpu"), "kl_histogram")["cpp"]
    if not cpp:
        pytest.skip(cpp.reason)
    script = textwrap.dedent("""
        import resource, numpy as np, fastral
        rng = np.random.default_rng(0)
        p, q = rng.random((1, 19), dtype=np.float32), rng.random((300, 19), dtype=np.float32)
        fastral.kl_histogram(p, q, bins=32, backend="cpp")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fastral.kl_histogram(p, q, bins=10**6, backend="cpp")
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    extra_mib = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert extra_mib < 64, f"{extra_mib:.0f} MiB of working memory for a 3.8 MiB output"


@pytest.mark.parametrize("backend", backend_params("kl_histogram"))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_other_float_dtypes(backend, dtype, rng):
    p, q = distributions(20, 19, rng, dtype=dtype), distributions(45, 19, rng, dtype=dtype)
    out = kl_histogram(p.to(DEVICE), q.to(DEVICE), 16, backend=backend)
    check_kl_histogram_against_scipy(out, p, q, 16, None, False, KL_DELTA["float32"])


@pytest.mark.parametrize("backend", backend_params("kl_histogram"))
def test_non_contiguous_inputs(backend, rng):
    p, q = distributions(23, 12, rng), distributions(31, 12, rng)
    out = kl_histogram(non_contiguous(p.to(DEVICE)), q.to(DEVICE).T.contiguous().T, 10, backend=backend)
    check_kl_histogram_against_scipy(out, p, q, 10, None, False, KL_DELTA["float32"])


@pytest.mark.parametrize("backend", backend_params("kl_histogram"))
def test_identical_rows_fall_in_the_middle_bin(backend):
    """Equal min and max: numpy widens the range to +-0.5, so every value lands in bin bins // 2."""
    p = torch.tensor([[1.0, 2.0, 3.0]])
    q = torch.tensor([[2.0, 1.0, 1.0]] * 6)
    out = torch.as_tensor(kl_histogram(p.to(DEVICE), q.to(DEVICE), 8, backend=backend)).cpu()
    assert out.tolist() == [[0, 0, 0, 0, 1, 0, 0, 0]]
    # One q row: every row of p holds a single KL value. Over many rows some value v has float32 edges
    # v - 0.5 + 16 * (1 / 32) that round below v, which put it in bin 15 before the middle bin was set directly.
    p = distributions(2000, 19, torch.Generator().manual_seed(7))
    q = distributions(1, 19, torch.Generator().manual_seed(8))
    out = torch.as_tensor(kl_histogram(p.to(DEVICE), q.to(DEVICE), 32, backend=backend)).cpu()
    assert (out[:, 16] == 1).all(), out[out[:, 16] != 1][:3]


@pytest.mark.parametrize("backend", backend_params("kl_histogram"))
def test_empty_inputs(backend, rng):
    q = distributions(10, 5, rng).to(DEVICE)
    assert tuple(kl_histogram(torch.zeros(0, 5, device=DEVICE), q, 8, backend=backend).shape) == (0, 8)
    assert tuple(kl_histogram(torch.zeros(2, 0, 5, device=DEVICE), q, 8, backend=backend).shape) == (2, 0, 8)
    nothing_labelled = kl_histogram(q[:3], torch.zeros(0, 5, device=DEVICE), 8, backend=backend)
    assert torch.as_tensor(nothing_labelled).cpu().tolist() == [[0.0] * 8] * 3
    single = kl_histogram(q[:1], q[:1], 8, exclude_self=True, backend=backend)
    assert torch.as_tensor(single).cpu().tolist() == [[0.0] * 8]


@pytest.mark.parametrize("backend", backend_params("kl_histogram"))
def test_bad_values_raise(backend):
    q = torch.rand(4, 3)
    for bad, message in ((float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"), (-1.0, "must be >= 0")):
        p = torch.rand(2, 3)
        p[1, 2] = bad
        with pytest.raises(ValueError, match=f"'p' .*{message}|'p' {message}"):
            kl_histogram(p.to(DEVICE), q.to(DEVICE), backend=backend)
        with pytest.raises(ValueError, match=f"'q' .*{message}|'q' {message}"):
            kl_histogram(q.to(DEVICE), p.to(DEVICE), backend=backend)


BAD_ARGUMENTS = [
    ({"p": torch.rand(3)}, ValueError, "'p' must have 2 dimensions"),
    ({"q": torch.rand(2, 4, 3)}, ValueError, "'q' must have 2 dimensions"),
    ({"q": torch.rand(4, 5)}, ValueError, "same number .* of classes"),
    ({"p": torch.ones(2, 3, dtype=torch.int64)}, TypeError, "'p' must be float32.*convert integer counts"),
    ({"bins": 0}, ValueError, "'bins' must be >= 1"),
    ({"bins": 2.5}, TypeError, "'bins' must be an int"),
    ({"range": (1.0, 0.0)}, ValueError, "'range' must be finite with lo < hi"),
    ({"range": (0.0, float("nan"))}, ValueError, "'range' must be finite"),
    ({"range": 3}, TypeError, "'range' must be None or a pair"),
    ({"exclude_self": True}, ValueError, "exclude_self=True pairs row i"),
    ({"eps": 0.0}, ValueError, "'eps' must be a float >= 1.175e-38"),
    ({"eps": 1e-50}, ValueError, r"'eps' must be a float >= 1.175e-38 \(float32's smallest normal"),
    ({"p": torch.full((2, 3), 3e38, dtype=torch.float64)}, ValueError, "'p' has rows whose values or sum exceed"),
    ({"q": torch.tensor([[2e38, 2e38, 1.0]] * 4)}, ValueError, "'q' has rows whose values or sum exceed float32"),
    ({"backend": "cuda"}, Exception, "backend 'cuda'"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    if kwargs.get("backend") == "cuda" and DEVICE.type == "cuda":
        pytest.skip("cuda is a valid backend on the GPU")
    args = {"p": torch.rand(2, 3), "q": torch.rand(4, 3), **kwargs}
    with pytest.raises(error, match=message):
        kl_histogram(**args)


def test_eps_may_be_any_real_number_type(rng):
    p, q = distributions(4, 6, rng), distributions(9, 6, rng)
    expected = kl_histogram(p, q, 5, eps=1e-7)
    for eps in (np.float32(1e-7), np.float64(1e-7)):
        assert torch.allclose(kl_histogram(p, q, 5, eps=eps), expected, atol=1e-6)


def test_numpy_in_numpy_out(rng):
    p, q = distributions(4, 6, rng).numpy(), distributions(9, 6, rng).numpy()
    out = kl_histogram(p, q, 5)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (4, 5)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-6)
