"""Triton kernels of :func:`fastral.bald` and :class:`fastral.BaldAccumulator`: MC-dropout BALD per pixel.

Design. All three kernels work on ``[BLOCK_C, BLOCK_P]`` tiles (the pixel axis shaped ``[BLOCK_P // VEC, VEC]``,
see ``_tile``), the class axis in registers and BLOCK_P pixels of one image along the flattened H * W axis
(grid ``(cdiv(H * W, BLOCK_P), B)``), so loads are contiguous per class plane and every output element has one
writer: no atomics except the status flags, deterministic.

- stacked ``[T, B, C, H, W]``, or baal's ``[B, C, H, W, T]`` (SAMPLE_LAST: offsets times T, plus t): one program
  loops over the T samples of its pixels, keeping ``sum_t p_t`` (C values per pixel) and ``sum_t H[p_t]`` in
  registers, and writes BALD and the predictive entropy once. The input is read exactly once and nothing else
  touches memory: memory-bound, like a copy without the write. (In baal's layout a warp's loads are T elements
  apart, so each sample's loads touch the lines the next T - 1 samples read again, from L1/L2.)
- update: T samples (usually 1) in either layout, summed in registers, then written (first update) or added into
  the running sums ``sum_p``/``sum_h``.
- finalize: ``entropy = H[sum_p / T]`` (``0 log 0 = 0``), ``bald = entropy - sum_h / T``.

Per sample and pixel: probabilities ``w / s`` and entropy from ``_pixel_scores`` (softmax with one exp per class
and one log; or the scores normalised), float32 accumulation whatever the input dtype.

Tuning (ptxas for sm_90, Triton 3.7-3.9; ``tests/triton_compile_check.py``). VEC = 2 pixels per thread, 4 warps,
BLOCK_P = 256: the stacked kernel holds 2 * C scores and 2 * C running sums per thread, 170-250 registers for
C = 19 and no spills (4 pixels per thread spill; letting the compiler pick 16-byte vectors splits the class axis
across warps instead). Two CTAs per SM keep 2 x 19 x 256 x 4 B = 39 KB of loads in flight. C is a compile-time
constant, so padded classes fold away.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    _pixel_scores,
    _report_flags,
    _xlogx,
    check_plane_size,
    device_guard,
    new_flags,
)

VEC = 2  # pixels per thread: 2 * C scores and 2 * C running sums in registers
NUM_WARPS = 4
BLOCK_P = VEC * 32 * NUM_WARPS


@triton.jit
def _bald_from_sums(sum_p, sum_h, T):
    """``(bald, entropy)`` of pixels from ``sum_t p_t`` ``[BLOCK_C, BLOCK_P]`` and ``sum_t H[p_t]`` ``[BLOCK_P]``."""
    entropy = -tl.sum(_xlogx(sum_p / T), 0)
    return entropy - sum_h / T, entropy


@triton.jit
def _tile(HW, C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, VEC: tl.constexpr):
    """This program's BLOCK_P pixels of image ``program_id(1)`` as ``[BLOCK_P // VEC, VEC]`` runs of VEC
    contiguous pixels, and their class-major offsets ``[BLOCK_C, BLOCK_P // VEC, VEC]`` into a ``[C, H * W]`` plane.

    Contiguity only along the last axis caps each load at VEC elements, so the compiler gives every thread VEC
    pixels of every class (classes in-thread) rather than wider vectors and a class axis split across warps.
    """
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]
    cls = tl.arange(0, BLOCK_C)[:, None, None]
    valid = pix < HW
    return cls * HW + pix[None], (cls < C) & valid[None], pix, valid


@triton.jit
def _sum_samples(
    x_ptr, offs, mask, valid, T, B, b, HW, C: tl.constexpr, SAMPLE_LAST: tl.constexpr, FROM_LOGITS: tl.constexpr
):
    """``(sum_t p_t, sum_t H[p_t], flags)`` over the T samples of this program's pixels of image ``b``, from
    ``[T, B, C, H, W]`` scores or (SAMPLE_LAST) ``[B, C, H, W, T]`` ones."""
    sum_p = tl.zeros(offs.shape, dtype=tl.float32)
    sum_h = tl.zeros(valid.shape, dtype=tl.float32)
    flags = tl.zeros(valid.shape, dtype=tl.int32)
    for t in range(0, T):
        if SAMPLE_LAST:
            ptrs = x_ptr + b.to(tl.int64) * (C * HW) * T + offs.to(tl.int64) * T + t
        else:
            ptrs = x_ptr + (t * B + b).to(tl.int64) * (C * HW) + offs
        _, w, s, h, f = _pixel_scores(ptrs, mask, valid, FROM_LOGITS)
        sum_p += w / s[None]
        sum_h += h
        flags |= f
    return sum_p, sum_h, flags


@triton.jit
def _bald_stacked_kernel(
    x_ptr,  # [T, B, C, H, W] scores
    bald_ptr,  # [B, H, W] float32
    entropy_ptr,  # [B, H, W] float32
    flags_ptr,  # [1] int32
    T,
    B,
    HW,
    C: tl.constexpr,
    SAMPLE_LAST: tl.constexpr,
    FROM_LOGITS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    VEC: tl.constexpr,
):
    b = tl.program_id(1)
    offs, mask, pix, valid = _tile(HW, C, BLOCK_C, BLOCK_P, VEC)
    sum_p, sum_h, flags = _sum_samples(x_ptr, offs, mask, valid, T, B, b, HW, C, SAMPLE_LAST, FROM_LOGITS)
    bald, entropy = _bald_from_sums(sum_p, sum_h, T)
    out = b.to(tl.int64) * HW + pix
    tl.store(bald_ptr + out, bald, mask=valid)
    tl.store(entropy_ptr + out, entropy, mask=valid)
    _report_flags(flags_ptr, flags)


@triton.jit
def _bald_update_kernel(
    x_ptr,  # T MC samples, [T, B, C, H, W] or (SAMPLE_LAST) [B, C, H, W, T]
    sum_p_ptr,  # [B, C, H, W] float32, running sum of the probabilities
    sum_h_ptr,  # [B, H, W] float32, running sum of the pixel entropies
    flags_ptr,  # [1] int32
    T,
    B,
    HW,
    C: tl.constexpr,
    SAMPLE_LAST: tl.constexpr,
    FROM_LOGITS: tl.constexpr,
    FIRST: tl.constexpr,  # write the sums instead of adding to them
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    VEC: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    offs, mask, pix, valid = _tile(HW, C, BLOCK_C, BLOCK_P, VEC)
    p, h, flags = _sum_samples(x_ptr, offs, mask, valid, T, B, b, HW, C, SAMPLE_LAST, FROM_LOGITS)
    p_ptrs = sum_p_ptr + b * (C * HW) + offs
    h_ptrs = sum_h_ptr + b * HW + pix
    if not FIRST:
        p += tl.load(p_ptrs, mask=mask)
        h += tl.load(h_ptrs, mask=valid)
    tl.store(p_ptrs, p, mask=mask)
    tl.store(h_ptrs, h, mask=valid)
    _report_flags(flags_ptr, flags)


@triton.jit
def _bald_finalize_kernel(
    sum_p_ptr,  # [B, C, H, W] float32
    sum_h_ptr,  # [B, H, W] float32
    bald_ptr,  # [B, H, W] float32
    entropy_ptr,  # [B, H, W] float32
    T,
    HW,
    C: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    VEC: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    offs, mask, pix, valid = _tile(HW, C, BLOCK_C, BLOCK_P, VEC)
    sum_p = tl.load(sum_p_ptr + b * (C * HW) + offs, mask=mask, other=0.0)
    sum_h = tl.load(sum_h_ptr + b * HW + pix, mask=valid)
    bald, entropy = _bald_from_sums(sum_p, sum_h, T)
    tl.store(bald_ptr + b * HW + pix, bald, mask=valid)
    tl.store(entropy_ptr + b * HW + pix, entropy, mask=valid)


def _grid(B: int, HW: int) -> tuple[int, int]:
    return triton.cdiv(HW, BLOCK_P), B


def bald_stacked(
    x: torch.Tensor, sample_last: bool, from_logits: bool, bald: torch.Tensor, entropy: torch.Tensor
) -> int:
    """BALD and predictive entropy ``[B, H, W]`` of T stacked samples, ``x [T, B, C, H, W]`` or (``sample_last``)
    ``[B, C, H, W, T]``, contiguous; returns the flags."""
    return _launch_on_stack(_bald_stacked_kernel, x, sample_last, from_logits, bald, entropy)


def bald_update(
    x: torch.Tensor, sample_last: bool, from_logits: bool, first: bool, sum_p: torch.Tensor, sum_h: torch.Tensor
) -> int:
    """Add the T samples of ``x`` (laid out as for :func:`bald_stacked`) to ``sum_p [B, C, H, W]`` and
    ``sum_h [B, H, W]`` (write them when ``first``); returns the flags."""
    return _launch_on_stack(_bald_update_kernel, x, sample_last, from_logits, sum_p, sum_h, FIRST=first)


def _launch_on_stack(kernel, x: torch.Tensor, sample_last: bool, from_logits: bool, out_a, out_b, **constants) -> int:
    """Launch ``kernel`` (one program per image and block of pixels) on the stack ``x`` with its two outputs;
    returns the flags."""
    T, B, C, H, W = _dims(x, sample_last)
    flags = new_flags(x.device)
    with device_guard(x):
        kernel[_grid(B, H * W)](
            x,
            out_a,
            out_b,
            flags,
            T,
            B,
            H * W,
            C=C,
            SAMPLE_LAST=sample_last,
            FROM_LOGITS=from_logits,
            BLOCK_C=triton.next_power_of_2(C),
            BLOCK_P=BLOCK_P,
            VEC=VEC,
            num_warps=NUM_WARPS,
            **constants,
        )
    return int(flags.item())


def _dims(x: torch.Tensor, sample_last: bool) -> tuple[int, int, int, int, int]:
    """``(T, B, C, H, W)`` of a stack in either layout, checked for int32 offsets within a sample."""
    T, B, C, H, W = (x.shape[4], *x.shape[:4]) if sample_last else x.shape
    check_plane_size("bald", C * H * W)
    return T, B, C, H, W


def bald_finalize(sum_p: torch.Tensor, sum_h: torch.Tensor, T: int, bald: torch.Tensor, entropy: torch.Tensor) -> None:
    """``entropy = H[sum_p / T]`` and ``bald = entropy - sum_h / T``, both ``[B, H, W]``."""
    B, C, H, W = sum_p.shape
    check_plane_size("bald", C * H * W)
    with device_guard(sum_p):
        _bald_finalize_kernel[_grid(B, H * W)](
            sum_p,
            sum_h,
            bald,
            entropy,
            T,
            H * W,
            C=C,
            BLOCK_C=triton.next_power_of_2(C),
            BLOCK_P=BLOCK_P,
            VEC=VEC,
            num_warps=NUM_WARPS,
        )
