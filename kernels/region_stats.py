"""Triton kernel of :func:`fastral.region_stats`: per-region argmax class counts and entropy pooling, one pass.

Design. One program per region (grid ``(R,)``), so every output element has exactly one writer and all
reductions are deterministic; R = 1024 for a ``[8, C, 1024, 2048]`` batch of 128 x 128 regions, about 8 programs
per H100 SM. A program walks its region one row of pooling windows at a time (``KH = rh // ph`` rows), in chunks
of ``BLOCK_KH`` rows. A chunk is a ``[BLOCK_C, BLOCK_NJ, BLOCK_KH, BLOCK_KW]`` tile of scores: window column j,
row i, column k inside the window, so pixel column ``j * KW + k``. The window columns run past ``pw`` to
``ceil(rw / KW)`` and the window rows past ``ph`` to ``ceil(rh / KH)``, so the same loop covers the trailing
rows/columns that pooling drops but the counts and the region mean keep; the pooled statistics only take
``j < pw`` and are stored only for window rows ``< ph``. Loads run along W (k, then j), 16 bytes per thread
where the region width allows, every score is read once, ignored pixels and pixels outside the grid never.

Per pixel: entropy from logits with one exp per class and one log (``_pixel_scores``), argmax ties to the
lowest class (``tl.argmax``). Counts come from ``tl.histogram`` over labels with ignored pixels sent to an
extra bin C. Window min/sum/max/count accumulate elementwise over a window row's chunks and are reduced once per
window row (a reshape to ``[BLOCK_NJ, BLOCK_KH * BLOCK_KW]`` makes that one reduction each); the region sum is
reduced once at the end; the region's pixel count is the sum of its class counts.

Tuning (ptxas for sm_90, Triton 3.7-3.9; ``tests/triton_compile_check.py``). A chunk holds about
``TILE_PIXELS`` = 512 pixels, 4 per thread at 4 warps, classes in-thread: one 16-byte float32 vector per class
along W (8 bytes for float16/bfloat16, capped by the ``[BLOCK_KW // VEC, VEC]`` split of k). 128 x 128 regions
with 8 x 8 pooling give ``[8, 4, 16]`` chunks, four per window row, no padding; C = 19 takes 200-225 registers,
no spills, 2 CTAs per SM with 2 x 19 x 512 x 4 B = 78 KB of loads in flight. Window shapes that are not powers
of two pad each axis to one (CamVid's 90 x 80 regions with 11 x 10 windows use about half of the lanes); a
window row wider than ``TILE_PIXELS`` padded pixels becomes a one-row chunk of that width (more registers per
thread). C is a compile-time constant (one compile per class count).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastral.backends import triton_interpreted

from ._common import _pixel_scores, _report_flags, check_plane_size, device_guard, new_flags

NUM_WARPS = 4
PIXELS_PER_THREAD = 4  # along W: one 16-byte vector of float32 scores per class

# Pixels per chunk on a GPU. Triton's CPU interpreter spends about a millisecond of Python per op whatever the
# tile size, so there chunks are 8x larger (fewer loop trips); tests shrink TILE_PIXELS to cover chunked rows.
TILE_PIXELS = PIXELS_PER_THREAD * 32 * NUM_WARPS * (8 if triton_interpreted() else 1)


@triton.jit
def _region_stats_kernel(
    x_ptr,  # [B, C, H, W] scores (float32 / float16 / bfloat16)
    ignore_ptr,  # [B, H, W] uint8, nonzero = ignored; read only when HAS_MASK
    counts_ptr,  # [R, C] int32
    pool_ptr,  # [R, 3, PH, PW] float32: min, mean, max
    mean_ptr,  # [R] float32
    flags_ptr,  # [1] int32
    H,
    W,
    NY,
    NX,
    RH,
    RW,
    PH,
    PW,
    KH,
    KW,
    NWY,  # window size, and window rows including a partial last one: ceil(RH / KH)
    C: tl.constexpr,
    FROM_LOGITS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_C: tl.constexpr,
    NUM_LABELS: tl.constexpr,  # power of two > C: label C counts ignored pixels
    BLOCK_KH: tl.constexpr,
    BLOCK_NJ: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    VEC: tl.constexpr,  # pixels per thread along W: the k axis is split [BLOCK_KW // VEC, VEC]
):
    r = tl.program_id(0)
    b = r // (NY * NX)
    iy = (r // NX) % NY
    ix = r % NX
    HW = H * W
    x_img = x_ptr + b.to(tl.int64) * (C * HW)
    ignore_img = ignore_ptr + b.to(tl.int64) * HW

    # Chunk axes: window column j, row i of the window row, column k inside the window as [BLOCK_KW // VEC, VEC]:
    # contiguity only along the last axis caps loads at VEC elements, so every thread holds VEC pixels of all
    # classes whatever the dtype (the compiler would take 8 half-precision pixels and spill).
    cls = tl.arange(0, BLOCK_C)[:, None, None, None, None]
    j = tl.arange(0, BLOCK_NJ)[:, None, None, None]
    i = tl.arange(0, BLOCK_KH)[None, :, None, None]
    k = (tl.arange(0, BLOCK_KW // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :])[None, None, :, :]
    col = j * KW + k  # column inside the region
    col_ok = (k < KW) & (col < RW)
    pool_col = j < PW
    pixel0 = (iy * RH) * W + ix * RW

    zero = tl.zeros([BLOCK_NJ, BLOCK_KH, BLOCK_KW // VEC, VEC], dtype=tl.float32)
    counts = tl.zeros([NUM_LABELS], dtype=tl.int32)
    total = zero
    flags = zero.to(tl.int32)
    for wy in range(0, NWY):
        lo = zero + float("inf")
        hi = zero - float("inf")
        acc = zero
        n = zero.to(tl.int32)
        for i0 in range(0, KH, BLOCK_KH):
            row = wy * KH + i0 + i  # row inside the region
            valid = (i0 + i < KH) & (row < RH) & col_ok
            pix = pixel0 + row * W + col
            if HAS_MASK:
                valid &= tl.load(ignore_img + pix, mask=valid, other=1) == 0
            x, _, _, h, f = _pixel_scores(x_img + cls * HW + pix[None], (cls < C) & valid[None], valid, FROM_LOGITS)
            flags |= f
            labels = tl.where(valid, tl.argmax(x, 0), C)
            counts += tl.histogram(tl.reshape(labels, [BLOCK_NJ * BLOCK_KH * BLOCK_KW]), NUM_LABELS)
            h = tl.where(valid, h, 0.0)
            total += h
            pooled = valid & pool_col
            lo = tl.minimum(lo, tl.where(pooled, h, float("inf")))
            hi = tl.maximum(hi, tl.where(pooled, h, float("-inf")))
            acc += tl.where(pooled, h, 0.0)
            n += pooled.to(tl.int32)
        # A row of windows done: reduce each window's pixels (the trailing two axes) at once.
        wn = tl.sum(tl.reshape(n, [BLOCK_NJ, BLOCK_KH * BLOCK_KW]), 1)
        wmin = tl.min(tl.reshape(lo, [BLOCK_NJ, BLOCK_KH * BLOCK_KW]), 1)
        wsum = tl.sum(tl.reshape(acc, [BLOCK_NJ, BLOCK_KH * BLOCK_KW]), 1)
        wmax = tl.max(tl.reshape(hi, [BLOCK_NJ, BLOCK_KH * BLOCK_KW]), 1)
        empty = wn == 0  # every pixel of the window ignored: 0
        wj = tl.arange(0, BLOCK_NJ)
        window = wy * PW + wj  # index in the pooling grid, past its end for the trailing window row
        out = pool_ptr + r * (3 * PH * PW) + window
        store = (wj < PW) & (window < PH * PW)
        tl.store(out, tl.where(empty, 0.0, wmin), mask=store)
        tl.store(out + PH * PW, tl.where(empty, 0.0, wsum / tl.maximum(wn, 1)), mask=store)
        tl.store(out + 2 * PH * PW, tl.where(empty, 0.0, wmax), mask=store)

    labels = tl.arange(0, NUM_LABELS)
    tl.store(counts_ptr + r * C + labels, counts, mask=labels < C)
    n_valid = tl.sum(tl.where(labels < C, counts, 0))
    tl.store(mean_ptr + r, tl.sum(total) / tl.maximum(n_valid, 1))
    _report_flags(flags_ptr, flags)


def region_stats(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    region: tuple[int, int],
    pool: tuple[int, int],
    from_logits: bool,
    counts: torch.Tensor,
    entropy_pool: torch.Tensor,
    entropy_mean: torch.Tensor,
) -> int:
    """Fill ``counts [R, C]``, ``entropy_pool [R, 3, ph, pw]`` and ``entropy_mean [R]``; return the status flags.

    ``x`` is ``[B, C, H, W]`` contiguous float32/float16/bfloat16, ``mask`` ``[B, H, W]`` bool (True = ignored)
    or None; outputs are preallocated and fully overwritten.
    """
    B, C, H, W = x.shape
    rh, rw = region
    ph, pw = pool
    ny, nx = H // rh, W // rw
    kh, kw = rh // ph, rw // pw
    check_plane_size("region_stats", C * H * W)
    block_kw = triton.next_power_of_2(kw)
    block_nj = triton.next_power_of_2(triton.cdiv(rw, kw))
    block_kh = min(triton.next_power_of_2(kh), max(1, TILE_PIXELS // (block_nj * block_kw)))
    tile = block_kh * block_nj * block_kw
    ignore = x if mask is None else mask.contiguous().view(torch.uint8)
    flags = new_flags(x.device)
    with device_guard(x):
        _region_stats_kernel[(B * ny * nx,)](
            x,
            ignore,
            counts,
            entropy_pool,
            entropy_mean,
            flags,
            H,
            W,
            ny,
            nx,
            rh,
            rw,
            ph,
            pw,
            kh,
            kw,
            triton.cdiv(rh, kh),
            C=C,
            FROM_LOGITS=from_logits,
            HAS_MASK=mask is not None,
            BLOCK_C=triton.next_power_of_2(C),
            NUM_LABELS=triton.next_power_of_2(C + 1),
            BLOCK_KH=block_kh,
            BLOCK_NJ=block_nj,
            BLOCK_KW=block_kw,
            VEC=min(PIXELS_PER_THREAD, block_kw),
            num_warps=max(1, min(NUM_WARPS, tile // (32 * PIXELS_PER_THREAD))),
        )
    return int(flags.item())
