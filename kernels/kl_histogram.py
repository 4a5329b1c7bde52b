"""Triton kernels of :func:`fastral.kl_histogram`: per-row histograms of KL(p_i || q_j), never the M x N matrix.

Design. ``KL(p_i || q_j) = a_i - p_i . log q_j`` with ``a_i = sum_c p_ic log p_ic`` (rows floored at eps and
renormalised first) is a skinny GEMM: K = C padded to ``KP = max(16, next_pow2(C))`` with zeros (p's padding is
0, so log q's padding adds nothing). The O((M + N) C) preparation (normalise, log, pad) runs as torch ops on
the same stream; the O(M N C) part is two Triton kernels over ``[BLOCK_M, BLOCK_N]`` tiles of the KL matrix:

- ``_kl_range_kernel`` (adaptive range only): per-row min and max over j;
- ``_kl_histogram_kernel``: per-row bin counts, numpy's binning rules (``_bin_index`` mirrors
  ``fastral.ops._reference.histogram_bins``) with the last bin closed and the +-0.5 widening of an empty range.

Both compute the tile with the same helper ``_kl_tile``, so pass 2 sees bit-identical values to pass 1 and the
row maximum lands in the last bin. Counts are a one-hot sum ``[BLOCK_M, BLOCK_N, BLOCK_BINS]`` reduced over the
tile's columns into a ``[BLOCK_M, BLOCK_BINS]`` int32 accumulator in registers (~2 ops per pair and bin).

Grid ``(cdiv(M, BLOCK_M), n_splits)``: for M = 25,600 there are only 400 row blocks, under 2 waves on an H100,
so each row block's columns are split into ``n_splits`` contiguous ranges to fill about 8 CTAs per SM. Splits
combine with atomics that are still deterministic: integer ``atomic_add`` of counts into a zeroed int32 buffer,
float ``atomic_min``/``atomic_max`` of the range. The launcher then divides by the number of compared rows.

Precision. The dot uses ``input_precision="ieee"`` (``DOT_PRECISION``; plain fp32 FMAs; TF32 would move KL
values by up to ~1e-2 and change bins), so values match the float32 reference up to summation order, i.e. bins
agree except for a value within float32 rounding of an edge. ``tf32x3`` is the candidate to try on a GPU.

Tuning (ptxas for sm_90, Triton 3.7-3.9: 116-180 registers, no spills). BLOCK_M = 64 rows reuse each loaded
``log q`` tile 64 times (q is read M / 64 times, mostly from L2); BLOCK_N = 32 keeps the one-hot tile at
64 x 32 x 32, which the compiler lays out one bin per lane. Static SASS of the binning loop: ~2,000 instructions
per thread per 2,048-pair tile (512 FFMA for the dot, ~1,200 compare/select/add for the one-hot), i.e. ~4 warp
instructions per pair; for 25,600 x 335,000 pairs that is ~3.5e10 warp instructions for pass 2 and ~1.3e10
for pass 1, an estimated 50-80 ms on an H100 (to be measured). If it is slower, the one-hot is the place to
work on (packing 4-bit counters of 8 bins per int32 would cut it ~5x).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastral.ops._reference import normalize_distributions

from ._common import device_guard

# "ieee": fp32 FMAs. "tf32x3" (3 TF32 tensor-core products, in Triton 3.x) matched fp32's error in a numpy emulation
# (max |KL error| 5.1e-6 vs 4.4e-6, C = 19; plain TF32: 9e-3) and drops the 512 FFMA per thread and tile; switch
# after the GPU parity suite passes with it (the interpreter ignores the setting).
DOT_PRECISION = tl.constexpr("ieee")
BLOCK_M = 64
BLOCK_N = 32
NUM_WARPS = 4
# CTAs per SM the column split aims for; in Triton's CPU interpreter (no SMs) a small number, so tests split.
CTAS_PER_SM = 8
INTERPRETER_PROGRAMS = 8


@triton.jit
def _kl_tile(p, a, lq_ptr, rows, n0, N, KP: tl.constexpr, BLOCK_N: tl.constexpr, EXCLUDE_SELF: tl.constexpr):
    """KL of this program's rows ``p [BLOCK_M, KP]`` (``a``: their ``sum p log p``) against q rows n0.. n0+BLOCK_N,
    clamped at 0, and which pairs count."""
    cols = n0 + tl.arange(0, BLOCK_N)
    k = tl.arange(0, KP)
    lq_t = tl.load(lq_ptr + cols[None, :] * KP + k[:, None], mask=cols[None, :] < N, other=0.0)  # [KP, BLOCK_N]
    kl = tl.maximum(a[:, None] - tl.dot(p, lq_t, input_precision=DOT_PRECISION), 0.0)
    keep = (cols < N)[None, :]
    if EXCLUDE_SELF:
        keep = keep & (rows[:, None] != cols[None, :])
    return kl, keep


@triton.jit
def _rows(p_ptr, a_ptr, M, KP: tl.constexpr, BLOCK_M: tl.constexpr):
    """This program's rows of p and their ``sum p log p`` (zeros past M)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    p = tl.load(p_ptr + rows[:, None] * KP + tl.arange(0, KP)[None, :], mask=row_ok[:, None], other=0.0)
    return rows, row_ok, p, tl.load(a_ptr + rows, mask=row_ok, other=0.0)


@triton.jit
def _edge(i, lo, hi, width, BINS):
    return tl.where(i == BINS, hi, lo + i.to(tl.float32) * width)


@triton.jit
def _bin_index(v, lo, hi, BINS):
    """numpy's bin of each value for BINS equal bins on [lo, hi] (last bin closed), -1 outside."""
    width = (hi - lo) / BINS
    guess = tl.floor((v - lo) * (BINS / (hi - lo)))
    idx = tl.minimum(tl.maximum(guess, 0.0), BINS - 1.0).to(tl.int32)
    idx -= (v < _edge(idx, lo, hi, width, BINS)).to(tl.int32)
    idx += ((v >= _edge(idx + 1, lo, hi, width, BINS)) & (idx != BINS - 1)).to(tl.int32)
    return tl.where((v >= lo) & (v <= hi), tl.minimum(tl.maximum(idx, 0), BINS - 1), -1)


@triton.jit
def _kl_range_kernel(
    p_ptr,  # [M, KP] float32, normalised rows of p, zero-padded
    a_ptr,  # [M] float32, sum_c p log p
    lq_ptr,  # [N, KP] float32, log of normalised rows of q, zero-padded
    lo_ptr,  # [M] float32, +inf on entry: row minimum
    hi_ptr,  # [M] float32, -inf on entry: row maximum
    M,
    N,
    SPLIT_N,  # columns per program along axis 1 (a multiple of BLOCK_N)
    KP: tl.constexpr,
    EXCLUDE_SELF: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows, row_ok, p, a = _rows(p_ptr, a_ptr, M, KP, BLOCK_M)
    lo = tl.full([BLOCK_M], float("inf"), dtype=tl.float32)
    hi = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    start = tl.program_id(1) * SPLIT_N
    for n0 in range(start, tl.minimum(start + SPLIT_N, N), BLOCK_N):
        kl, keep = _kl_tile(p, a, lq_ptr, rows, n0, N, KP, BLOCK_N, EXCLUDE_SELF)
        lo = tl.minimum(lo, tl.min(tl.where(keep, kl, float("inf")), 1))
        hi = tl.maximum(hi, tl.max(tl.where(keep, kl, float("-inf")), 1))
    tl.atomic_min(lo_ptr + rows, lo, mask=row_ok)
    tl.atomic_max(hi_ptr + rows, hi, mask=row_ok)


@triton.jit
def _kl_histogram_kernel(
    p_ptr,  # [M, KP] float32, normalised rows of p, zero-padded
    a_ptr,  # [M] float32, sum_c p log p
    lq_ptr,  # [N, KP] float32, log of normalised rows of q, zero-padded
    lo_ptr,  # [M] float32, histogram range per row (equal ends widen by 0.5)
    hi_ptr,  # [M] float32
    counts_ptr,  # [M, BINS] int32, zeros on entry
    M,
    N,
    SPLIT_N,
    BINS,
    KP: tl.constexpr,
    EXCLUDE_SELF: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_BINS: tl.constexpr,
):
    rows, row_ok, p, a = _rows(p_ptr, a_ptr, M, KP, BLOCK_M)
    lo = tl.load(lo_ptr + rows, mask=row_ok, other=0.0)
    hi = tl.load(hi_ptr + rows, mask=row_ok, other=0.0)
    # numpy widens an empty range to +-0.5, which puts every value in the middle bin: say so directly rather than
    # trust the float32 rounding of v - (v - 0.5) against the middle edge (as the torch and cpp backends do).
    same = (lo == hi)[:, None]
    lo = lo[:, None]
    hi = tl.where(same, lo + 1.0, hi[:, None])
    bins = tl.arange(0, BLOCK_BINS)
    counts = tl.zeros([BLOCK_M, BLOCK_BINS], dtype=tl.int32)
    start = tl.program_id(1) * SPLIT_N
    for n0 in range(start, tl.minimum(start + SPLIT_N, N), BLOCK_N):
        kl, keep = _kl_tile(p, a, lq_ptr, rows, n0, N, KP, BLOCK_N, EXCLUDE_SELF)
        idx = tl.where(keep, tl.where(same, BINS // 2, _bin_index(kl, lo, hi, BINS)), -1)
        counts += tl.sum((idx[:, :, None] == bins[None, None, :]).to(tl.int32), 1)
    out = counts_ptr + rows[:, None] * BINS + bins[None, :]
    tl.atomic_add(out, counts, mask=row_ok[:, None] & (bins < BINS)[None, :])


def _padded(x: torch.Tensor, width: int) -> torch.Tensor:
    out = x.new_zeros(x.shape[0], width)
    out[:, : x.shape[1]] = x
    return out


def _column_split(m_blocks: int, n: int, device: torch.device) -> int:
    """Columns per program: enough column ranges that the grid fills the GPU, whole BLOCK_N tiles each."""
    if device.type == "cuda":
        target = CTAS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = INTERPRETER_PROGRAMS
    n_tiles = triton.cdiv(n, BLOCK_N)
    splits = max(1, min(n_tiles, triton.cdiv(target, m_blocks)))
    return triton.cdiv(n_tiles, splits) * BLOCK_N


def kl_histogram(
    p: torch.Tensor,
    q: torch.Tensor,
    bins: int,
    range: tuple[float, float] | None,
    exclude_self: bool,
    eps: float,
    out: torch.Tensor,
) -> None:
    """Fill ``out [M, bins]`` with the normalised histogram of ``KL(p_i || q_j)`` over j for every row i.

    ``p [M, C]`` and ``q [N, C]`` are contiguous float32 (M, N >= 1); ``exclude_self`` needs M == N.
    """
    (M, C), N = p.shape, q.shape[0]
    kp = max(16, triton.next_power_of_2(C))
    pn = normalize_distributions(p, eps)
    a = (pn * pn.log()).sum(1)
    pn = _padded(pn, kp)
    lq = _padded(normalize_distributions(q, eps).log(), kp)
    m_blocks = triton.cdiv(M, BLOCK_M)
    split_n = _column_split(m_blocks, N, p.device)
    grid = (m_blocks, triton.cdiv(N, split_n))
    if range is None:
        lo = torch.full((M,), float("inf"), dtype=torch.float32, device=p.device)
        hi = torch.full((M,), float("-inf"), dtype=torch.float32, device=p.device)
    else:
        lo = torch.full((M,), range[0], dtype=torch.float32, device=p.device)
        hi = torch.full((M,), range[1], dtype=torch.float32, device=p.device)
    counts = torch.zeros((M, bins), dtype=torch.int32, device=p.device)
    with device_guard(p):
        if range is None:
            _kl_range_kernel[grid](
                pn,
                a,
                lq,
                lo,
                hi,
                M,
                N,
                split_n,
                KP=kp,
                EXCLUDE_SELF=exclude_self,
                BLOCK_M=BLOCK_M,
                BLOCK_N=BLOCK_N,
                num_warps=NUM_WARPS,
            )
        _kl_histogram_kernel[grid](
            pn,
            a,
            lq,
            lo,
            hi,
            counts,
            M,
            N,
            split_n,
            bins,
            KP=kp,
            EXCLUDE_SELF=exclude_self,
            BLOCK_M=BLOCK_M,
            BLOCK_N=BLOCK_N,
            BLOCK_BINS=triton.next_power_of_2(bins),
            num_warps=NUM_WARPS,
        )
    torch.div(counts, max(N - 1 if exclude_self else N, 1), out=out)
