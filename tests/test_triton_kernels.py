"""Triton launchers called directly, on the shapes that stress their tiling: class counts that are (not) powers
of two, regions and windows with remainders, chunked window rows, pixel and column tiles cut by the edge, column
splits, bins that are not a power of two. Each against the float64 reference, with poisoned outputs. Plus the
kernels compiled for sm_90 without a GPU (tests/triton_compile_check.py): GPU-only compile errors and spills.

On a CPU these run in Triton's interpreter (conftest sets TRITON_INTERPRET=1); keep grids to a few dozen programs.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastral
from fastral import reference_bald, reference_kl_histogram, reference_region_stats
from fastral.testing import (
    DEVICE,
    assert_close,
    assert_equal,
    assert_histogram_row_matches,
    ignore_mask,
    logits,
    probabilities,
)

TRITON = fastral.available_backends(DEVICE)["triton"]
pytestmark = pytest.mark.skipif(not TRITON, reason=TRITON.reason)
if TRITON:
    import triton
    from fastral.kernels import bald as bald_kernels
    from fastral.kernels import kl_histogram as kl_kernels
    from fastral.kernels import region_stats as rs_kernels

    PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"

NAN = float("nan")


def scores(shape, rng, from_logits, dtype, class_dim=1):
    make = logits if from_logits else probabilities
    return make(shape, rng, dtype, class_dim=class_dim)


def run_region_stats(x, mask, region, pool, from_logits):
    """The launcher on poisoned outputs: returns (counts, entropy_pool, entropy_mean, flags)."""
    B, C, H, W = x.shape
    R = B * (H // region[0]) * (W // region[1])
    counts = torch.full((R, C), torch.iinfo(torch.int32).min, dtype=torch.int32, device=DEVICE)
    pool_out = torch.full((R, 3, *pool), NAN, device=DEVICE)
    mean = torch.full((R,), NAN, device=DEVICE)
    m = None if mask is None else mask.to(DEVICE)
    flags = rs_kernels.region_stats(x.to(DEVICE), m, region, pool, from_logits, counts, pool_out, mean)
    return counts, pool_out, mean, flags


def check_region_stats(x, mask, region, pool, from_logits):
    counts, pool_out, mean, flags = run_region_stats(x, mask, region, pool, from_logits)
    assert flags == 0
    ref = reference_region_stats(x.double(), region, pool, from_logits, mask)
    assert_equal(counts, ref.counts, "counts")
    assert_close(pool_out, ref.entropy_pool, "entropy", "entropy_pool")
    assert_close(mean, ref.entropy_mean, "entropy", "entropy_mean")
    return counts, pool_out, mean


REGION_CASES = [  # (B, C, H, W, region, pool, from_logits, dtype)
    # C = 8 fills its class block (labels need a 16-bin histogram); remainders of the image, the region (2 rows,
    # 1 column) and 17 / 4 -> 5 window columns padded to 8.
    (1, 8, 23, 37, (11, 17), (3, 4), True, torch.float32),
    # 20 / 8 -> windows 2 wide: 4 trailing columns are two extra window columns, 4 trailing rows two extra rows.
    (1, 5, 20, 40, (20, 20), (8, 8), False, torch.float16),
    # 1-pixel windows: a window row is one image row of 8 windows.
    (1, 19, 16, 16, (8, 8), (8, 8), True, torch.bfloat16),
    # CamVid-like 11 x 10 windows (padded to 16 x 16) with 2 trailing rows, C = 11.
    (1, 11, 45, 80, (45, 40), (4, 4), False, torch.float32),
]


@pytest.mark.parametrize("case", REGION_CASES, ids=str)
def test_region_stats_tiling(case, rng):
    B, C, H, W, region, pool, from_logits, dtype = case
    x = scores((B, C, H, W), rng, from_logits, dtype)
    check_region_stats(x, ignore_mask((B, H, W), rng), region, pool, from_logits)


def test_region_stats_chunked_window_rows(rng, monkeypatch):
    """Window rows taller or wider than a chunk: several chunks per window row, and one-row chunks wider than the
    chunk budget (16-row windows, 64 pixels wide, with a 40-pixel budget)."""
    monkeypatch.setattr(rs_kernels, "TILE_PIXELS", 40)
    x = scores((1, 3, 32, 64), rng, True, torch.float32)
    check_region_stats(x, ignore_mask((1, 32, 64), rng), (32, 64), (2, 1), True)
    check_region_stats(x, None, (16, 16), (2, 2), True)


def test_region_stats_reads_only_valid_pixels_and_is_deterministic(rng):
    """NaN in ignored pixels and outside the region grid is never read; a second run is bitwise identical."""
    x = scores((2, 6, 21, 26), rng, True, torch.float32)
    mask = ignore_mask((2, 21, 26), rng, fraction=0.3)
    poisoned = x.clone()
    poisoned.movedim(1, -1)[mask] = NAN
    poisoned[:, :, 20:, :] = NAN  # below the last region row
    poisoned[:, :, :, 24:] = NAN  # right of the last region column
    first = check_region_stats(poisoned, mask, (10, 8), (2, 4), True)
    second = run_region_stats(poisoned, mask, (10, 8), (2, 4), True)[:3]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_region_stats_flags_combine_over_pixels_and_programs():
    p = torch.rand(2, 3, 8, 8) + 0.1
    p[0, 1, 2, 3] = -0.5  # negative, region 0
    p[1, :, 6, 6] = 0.0  # all zero, region 7
    assert run_region_stats(p, None, (4, 4), (2, 2), False)[3] == 2 | 4
    p[1, 0, 0, 0] = NAN
    assert run_region_stats(p, None, (4, 4), (2, 2), False)[3] == 1 | 2 | 4
    z = torch.randn(1, 3, 8, 8)
    z[0, 2, 7, 7] = -math.inf
    assert run_region_stats(z, None, (4, 4), (2, 2), True)[3] == 1


BALD_CASES = [  # (T, B, C, H, W, from_logits, dtype): 600 pixels per image = a full and a partial pixel tile
    (3, 2, 7, 20, 30, True, torch.float32),
    (2, 1, 16, 20, 30, False, torch.bfloat16),
    (2, 2, 3, 1, 513, True, torch.float16),
]


@pytest.mark.parametrize("case", BALD_CASES, ids=str)
def test_bald_stacked_and_streaming(case, rng):
    T, B, C, H, W, from_logits, dtype = case
    x = scores((T, B, C, H, W), rng, from_logits, dtype, class_dim=2).to(DEVICE)
    ref_bald, ref_entropy = reference_bald(x.cpu().double(), from_logits)
    bald = torch.full((B, H, W), NAN, device=DEVICE)
    entropy = torch.full((B, H, W), NAN, device=DEVICE)
    assert bald_kernels.bald_stacked(x, False, from_logits, bald, entropy) == 0
    assert_close(bald, ref_bald, "bald", "stacked bald")
    assert_close(entropy, ref_entropy, "entropy", "stacked entropy")
    baal_layout = x.permute(1, 2, 3, 4, 0).contiguous()
    bald.fill_(NAN)
    assert bald_kernels.bald_stacked(baal_layout, True, from_logits, bald, entropy) == 0
    assert_close(bald, ref_bald, "bald", "stacked bald, sample_last")

    sum_p = torch.full((B, C, H, W), NAN, device=DEVICE)
    sum_h = torch.full((B, H, W), NAN, device=DEVICE)
    first = baal_layout[..., :1].contiguous()
    assert bald_kernels.bald_update(first, True, from_logits, True, sum_p, sum_h) == 0
    if T > 1:
        assert bald_kernels.bald_update(x[1:], False, from_logits, False, sum_p, sum_h) == 0
    probs = torch.softmax(x.cpu().double(), 2) if from_logits else x.cpu().double() / x.cpu().double().sum(2, True)
    assert_close(sum_p, probs.sum(0), "probability", "sum_p")
    bald.fill_(NAN)
    entropy.fill_(NAN)
    bald_kernels.bald_finalize(sum_p, sum_h, T, bald, entropy)
    assert_close(bald, ref_bald, "bald", "streamed bald")
    assert_close(entropy, ref_entropy, "entropy", "streamed entropy")


def test_bald_flags():
    out = torch.empty(2, 5, 7, device=DEVICE)
    p = torch.rand(3, 2, 4, 5, 7, device=DEVICE)
    p[2, 1, 0, 4, 6] = -1.0
    p[0, 0, :, 0, 0] = 0.0
    assert bald_kernels.bald_stacked(p, False, False, out, out.clone()) == 2 | 4
    sum_p, sum_h = torch.empty(2, 4, 5, 7, device=DEVICE), torch.empty(2, 5, 7, device=DEVICE)
    assert bald_kernels.bald_update(p[:1], False, False, True, sum_p, sum_h) == 4
    z = torch.randn(2, 4, 5, 7, device=DEVICE)
    z[1, 3, 2, 2] = math.inf
    assert bald_kernels.bald_update(z[None], False, True, False, sum_p, sum_h) == 1


def kl_values(p, q, exclude_self, eps=1e-7):
    """KL(p_i || q_j) rows in float64 (the reference's formula)."""
    pn = p.double().clamp_min(eps)
    pn = pn / pn.sum(1, keepdim=True)
    qn = q.double().clamp_min(eps)
    qn = qn / qn.sum(1, keepdim=True)
    kl = ((pn * pn.log()).sum(1, keepdim=True) - pn @ qn.log().T).clamp_min(0).numpy()
    return [np.delete(row, i) if exclude_self else row for i, row in enumerate(kl)]


KL_CASES = [  # (M, N, C, bins, range, exclude_self)
    (70, 45, 3, 10, None, False),  # 2 row blocks (one partial), a partial column tile, K padded 3 -> 16
    (40, 40, 33, 32, None, True),  # K padded to 64, self excluded across column splits
    (30, 77, 19, 5, (0.2, 3.0), False),  # fixed range: values outside dropped
    (17, 100, 20, 17, None, False),  # bins not a power of two
]


@pytest.mark.parametrize("case", KL_CASES, ids=str)
def test_kl_histogram_tiling(case, rng):
    M, N, C, bins, value_range, exclude_self = case
    p = torch.rand(M, C, generator=rng) ** 4  # skewed, with near-zero classes hitting the eps floor
    q = p.clone() if exclude_self else torch.rand(N, C, generator=rng) ** 4
    m_blocks = math.ceil(M / kl_kernels.BLOCK_M)
    assert kl_kernels._column_split(m_blocks, N, DEVICE) < N  # the column split is exercised
    out = torch.full((M, bins), NAN, device=DEVICE)
    kl_kernels.kl_histogram(p.to(DEVICE), q.to(DEVICE), bins, value_range, exclude_self, 1e-7, out)
    out = out.cpu()
    n = N - 1 if exclude_self else N
    ambiguous = 0
    for i, row in enumerate(kl_values(p, q, exclude_self)):
        ambiguous += assert_histogram_row_matches(out[i].numpy(), row, bins, value_range, n, 4e-5, f"row {i}")
    assert ambiguous <= max(2, 0.02 * M * n)
    again = torch.full((M, bins), NAN, device=DEVICE)
    kl_kernels.kl_histogram(p.to(DEVICE), q.to(DEVICE), bins, value_range, exclude_self, 1e-7, again)
    assert torch.equal(out, again.cpu())  # integer atomics and float min/max: order-independent


def test_kl_histogram_matches_float32_reference(rng):
    """The kernel computes the float32 reference's values (up to the GEMM's summation order): counts agree but for
    a value within rounding of an edge."""
    p, q = torch.rand(20, 6, generator=rng), torch.rand(90, 6, generator=rng)
    out = torch.full((20, 8), NAN, device=DEVICE)
    kl_kernels.kl_histogram(p.to(DEVICE), q.to(DEVICE), 8, None, False, 1e-7, out)
    moved = (out.cpu() - reference_kl_histogram(p, q, 8)).abs().sum() * 90 / 2
    assert moved <= 2, f"{moved} values changed bins against the float32 reference"


@pytest.mark.slow
@pytest.mark.skipif(not TRITON or not PTXAS.exists(), reason="this Triton build ships no NVIDIA backend")
def test_kernels_compile_for_sm90_without_spills():
    """The kernels as the GPU sees them: compiled by Triton for sm_90 (no GPU needed), no register spills."""
    check = Path(__file__).with_name("triton_compile_check.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(check)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
