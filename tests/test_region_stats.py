"""region_stats: every backend against the float64 reference, plus scipy, bad input and interop."""

import numpy as np
import pytest
import scipy.stats
import torch

import fastral
from fastral import reference_region_stats, region_stats
from fastral.testing import (
    DEVICE,
    DTYPES,
    TOLERANCE,
    assert_close,
    assert_equal,
    backend_params,
    ignore_mask,
    logits,
    non_contiguous,
    probabilities,
)

# (B, C, H, W, region (rh, rw), pool (ph, pw)): odd sizes, remainders, 1x1 regions, C = 1, 2, 11, 19, 20.
SMALL_CASES = [
    (1, 11, 360, 480, (90, 80), (8, 8)),  # CamVid: windows 11x10, trailing rows dropped
    (2, 19, 128, 256, (64, 64), (8, 8)),
    (1, 1, 7, 9, (1, 1), (1, 1)),  # C = 1: entropy 0 everywhere; 63 one-pixel regions
    (2, 2, 33, 47, (16, 15), (3, 4)),  # remainders in both directions
    (1, 20, 50, 70, (25, 35), (5, 7)),
    (1, 19, 45, 64, (45, 64), (1, 1)),  # one region, one window
]
BIG_CASES = [
    (1, 19, 1024, 2048, (128, 128), (8, 8)),  # one Cityscapes frame
]


def check_against_reference(x, region, pool, from_logits, mask, backend, name="region_stats"):
    out = region_stats(
        x.to(DEVICE), region, pool, from_logits, None if mask is None else mask.to(DEVICE), backend=backend
    )
    ref = reference_region_stats(x.double(), region, pool, from_logits, mask)
    assert_equal(out.counts, ref.counts, f"{name}.counts")
    assert_close(out.entropy_pool, ref.entropy_pool, "entropy", f"{name}.entropy_pool")
    assert_close(out.entropy_mean, ref.entropy_mean, "entropy", f"{name}.entropy_mean")
    return out


@pytest.mark.sanitizer
@pytest.mark.parametrize("backend", backend_params("region_stats"))
@pytest.mark.parametrize("case", SMALL_CASES, ids=str)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_matches_reference(backend, case, from_logits, masked, rng):
    B, C, H, W, region, pool = case
    x = logits((B, C, H, W), rng) if from_logits else probabilities((B, C, H, W), rng)
    mask = ignore_mask((B, H, W), rng) if masked else None
    out = check_against_reference(x, region, pool, from_logits, mask, backend)
    # Every non-ignored pixel of the region grid is counted exactly once.
    ny, nx = fastral.region_grid(H, W, region)
    valid = torch.ones(B, H, W, dtype=torch.bool) if mask is None else ~mask
    per_image = out.counts.sum(1).reshape(B, ny * nx).sum(1)
    assert per_image.tolist() == valid[:, : ny * region[0], : nx * region[1]].sum((1, 2)).tolist()


@pytest.mark.parametrize("backend", backend_params("region_stats", fast_only=True))
@pytest.mark.parametrize("case", BIG_CASES, ids=str)
def test_full_frame_matches_reference(backend, case, rng):
    B, C, H, W, region, pool = case
    check_against_reference(logits((B, C, H, W), rng), region, pool, True, None, backend)


@pytest.mark.parametrize("backend", backend_params("region_stats"))
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_half_precision_inputs(backend, dtype, from_logits, rng):
    shape = (2, 19, 40, 66)
    x = logits(shape, rng, dtype) if from_logits else probabilities(shape, rng, dtype)
    check_against_reference(x, (20, 33), (4, 3), from_logits, ignore_mask((2, 40, 66), rng), backend)


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_confident_logits(backend, rng):
    """+-80 logits: entropy ~ 0 and exact; no overflow, no NaN from exp(80) or log(0)."""
    x = logits((2, 19, 32, 48), rng, confident=True)
    out = check_against_reference(x, (16, 16), (4, 4), True, None, backend)
    assert torch.as_tensor(out.entropy_mean).abs().max() < 1e-6
    # Several classes near +80 at once: entropy ~ log(k), computed without cancellation.
    ties = torch.randn(2, 19, 32, 48, generator=rng) * 0.1 + torch.where(
        torch.rand(2, 19, 32, 48, generator=rng) < 0.3, 80.0, -80.0
    )
    check_against_reference(ties, (16, 16), (4, 4), True, None, backend)


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_one_hot_probabilities(backend, rng):
    """Exact zero probabilities (one-hot pixels): 0 log 0 = 0, so every entropy is exactly 0."""
    labels = torch.randint(0, 11, (2, 30, 40), generator=rng)
    x = torch.nn.functional.one_hot(labels, 11).permute(0, 3, 1, 2).float()
    out = check_against_reference(x, (15, 20), (3, 4), False, None, backend)
    assert torch.as_tensor(out.entropy_pool).abs().max() == 0


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_ties_go_to_lowest_class(backend):
    x = torch.zeros(1, 5, 4, 4)
    x[:, 2:] = 1.0  # classes 2, 3, 4 tie for the maximum
    out = region_stats(x.to(DEVICE), (4, 4), (1, 1), backend=backend)
    assert torch.as_tensor(out.counts).tolist() == [[0, 0, 16, 0, 0]]


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_non_contiguous_inputs(backend, rng):
    x = non_contiguous(logits((2, 7, 36, 50), rng))
    mask = non_contiguous(ignore_mask((2, 36, 50), rng))
    check_against_reference(x, (12, 25), (3, 5), True, mask, backend)
    channels_last = logits((2, 7, 36, 50), rng).to(memory_format=torch.channels_last)
    check_against_reference(channels_last, (12, 25), (3, 5), True, None, backend)


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_fully_ignored_region_gives_zero(backend, rng):
    x = logits((1, 4, 8, 16), rng)
    mask = torch.zeros(1, 8, 16, dtype=torch.bool)
    mask[:, :, :8] = True  # the left region is ignored entirely
    mask[:, :2, 8:10] = True  # and one pooling window of the right region
    out = check_against_reference(x, (8, 8), (4, 4), True, mask, backend)
    assert torch.as_tensor(out.counts)[0].sum() == 0
    assert torch.as_tensor(out.entropy_mean)[0] == 0
    assert (torch.as_tensor(out.entropy_pool)[1, :, 0, 0] == 0).all()


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_empty_batch(backend):
    out = region_stats(torch.zeros(0, 5, 16, 16, device=DEVICE), (8, 8), (2, 2), backend=backend)
    assert tuple(out.counts.shape) == (0, 5)
    assert tuple(out.entropy_pool.shape) == (0, 3, 2, 2)
    assert tuple(out.entropy_mean.shape) == (0,)


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_bad_values_raise(backend):
    x = torch.randn(1, 3, 8, 8)
    x[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="'scores' contains NaN"):
        region_stats(x.to(DEVICE), (4, 4), (2, 2), backend=backend)
    x[0, 1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="'scores' contains NaN or infinite"):
        region_stats(x.to(DEVICE), (4, 4), (2, 2), backend=backend)
    # A NaN in an ignored pixel or outside the region grid is never read.
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2, 3] = True
    region_stats(x.to(DEVICE), (4, 4), (2, 2), ignore_mask=mask.to(DEVICE), backend=backend)
    y = torch.rand(1, 3, 9, 8)
    y[0, 0, 8, 0] = float("nan")
    region_stats(y.to(DEVICE), (4, 4), (2, 2), from_logits=False, backend=backend)
    p = torch.rand(1, 3, 8, 8)
    p[0, 2, 5, 5] = -0.1
    with pytest.raises(ValueError, match="must be >= 0"):
        region_stats(p.to(DEVICE), (4, 4), (2, 2), from_logits=False, backend=backend)
    p[0, :, 5, 5] = 0.0
    with pytest.raises(ValueError, match="all zero or sum outside"):
        region_stats(p.to(DEVICE), (4, 4), (2, 2), from_logits=False, backend=backend)


# Triton's CPU interpreter reduces with numpy, which warns on the float32 overflows these cases are about.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_float32_limits(backend, rng):
    """The domain every backend agrees on: finite float32 logits are computed exactly even where their spread
    overflows float32; probabilities whose pixel sums leave float32's normal range, and float64 scores beyond
    float32's range, are refused with the same error by every backend."""
    x = logits((1, 5, 8, 8), rng)
    x[0, 0, :4] = 3e38  # spread 6e38 against the -3e38 below: z - max overflows to -inf in float32
    x[0, 1, :2] = -3e38
    x[0, 2, 2:4] = 3e38  # a tie at the top: entropy log 2
    check_against_reference(x, (4, 4), (2, 2), True, None, backend, "overflowing spread")
    tiny = probabilities((1, 4, 8, 8), rng) * 1e-30  # small, but sums are normal numbers
    check_against_reference(tiny, (4, 4), (2, 2), False, None, backend, "tiny probabilities")
    for value, dtype in ((1e-40, torch.float32), (2e38, torch.float32), (1e-300, torch.float64)):
        p = probabilities((1, 4, 8, 8), rng, dtype)
        p[0, :, 3, 3] = value  # one pixel summing to a subnormal, beyond FLT_MAX, below FLT_MIN in float64
        with pytest.raises(ValueError, match="all zero or sum outside float32's normal range"):
            region_stats(p.to(DEVICE), (4, 4), (2, 2), from_logits=False, backend=backend)
    wide = logits((1, 4, 8, 8), rng, torch.float64)
    wide[0, 1, 2, 2] = 1e39
    with pytest.raises(ValueError, match="float64 values beyond float32's range"):
        region_stats(wide.to(DEVICE), (4, 4), (2, 2), backend=backend)


@pytest.mark.parametrize("backend", backend_params("region_stats"))
def test_entropy_matches_scipy(backend, rng):
    """Mean region entropy of probabilities equals scipy.stats.entropy averaged over the region's pixels."""
    p = probabilities((1, 6, 12, 10), rng, torch.float64)
    out = region_stats(p.float().to(DEVICE), (6, 5), (1, 1), from_logits=False, backend=backend)
    pixel_h = scipy.stats.entropy(p[0].float().double().numpy(), axis=0)  # [H, W], normalises like fastral
    expected = pixel_h.reshape(2, 6, 2, 5).mean((1, 3)).reshape(-1)
    np.testing.assert_allclose(torch.as_tensor(out.entropy_mean).cpu().numpy(), expected, **TOLERANCE["entropy"])


@pytest.mark.skipif(DEVICE.type != "cpu" or not fastral.available_backends()["cpp"], reason="needs the cpp backend")
def test_cpp_thread_count_independence(rng):
    x = logits((2, 19, 180, 240), rng)
    mask = ignore_mask((2, 180, 240), rng)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(region_stats(x, (90, 80), (8, 8), ignore_mask=mask, backend="cpp"))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(runs[0].counts, runs[1].counts)
    torch.testing.assert_close(runs[0].entropy_pool, runs[1].entropy_pool, **TOLERANCE["rerun"])
    torch.testing.assert_close(runs[0].entropy_mean, runs[1].entropy_mean, **TOLERANCE["rerun"])


BAD_ARGUMENTS = [
    ({"scores": torch.zeros(3, 8, 8)}, ValueError, "'scores' must have 4 dimensions"),
    ({"scores": torch.zeros(1, 3, 8, 8, dtype=torch.int32)}, TypeError, "'scores' must be float32"),
    ({"scores": torch.zeros(1, 0, 8, 8)}, ValueError, "at least one class"),
    ({"region": (16, 4)}, ValueError, "'region' .* larger than the 8x8 image"),
    ({"region": (0, 4)}, ValueError, "'region' must be positive"),
    ({"region": 2.5}, TypeError, "'region' must be an int or a pair"),
    ({"pool": (8, 2)}, ValueError, "'pool' .* more cells than the region"),
    ({"ignore_mask": torch.zeros(1, 8, 7, dtype=torch.bool)}, ValueError, "'ignore_mask' must have shape"),
    ({"ignore_mask": torch.zeros(1, 8, 8)}, TypeError, "'ignore_mask' must be a boolean mask"),
    ({"scores": "logits"}, TypeError, "'scores' must be a numpy array, a torch tensor"),
    ({"backend": "gpu"}, ValueError, "'backend' must be 'auto' or one of"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    args = {"scores": torch.zeros(1, 3, 8, 8), "region": (4, 4), "pool": (2, 2), **kwargs}
    with pytest.raises(error, match=message):
        region_stats(**args)


def test_numpy_in_numpy_out_without_copy(rng):
    x = logits((1, 5, 16, 24), rng).numpy()
    out = region_stats(x, (8, 8), (2, 2))
    assert all(isinstance(t, np.ndarray) for t in out)
    assert out.counts.dtype == np.int32 and out.entropy_pool.dtype == np.float32
    ref = region_stats(torch.from_numpy(x), (8, 8), (2, 2), backend="torch")
    np.testing.assert_array_equal(out.counts, ref.counts.numpy())


def test_region_order_is_row_major_over_images(rng):
    """Region r = (b * ny + iy) * nx + ix: make each region's argmax class its own index and read it back."""
    B, ny, nx = 2, 3, 4
    labels = torch.arange(B * ny * nx).reshape(B, ny, 1, nx, 1).expand(B, ny, 5, nx, 6).reshape(B, ny * 5, nx * 6)
    # times 10: logits (a plain one-hot would look like probabilities and warn)
    x = torch.nn.functional.one_hot(labels, B * ny * nx).permute(0, 3, 1, 2).float() * 10
    out = region_stats(x, (5, 6), (1, 1))
    assert out.counts.argmax(1).tolist() == list(range(B * ny * nx))
