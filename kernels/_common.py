"""Pieces shared by fastral's Triton kernels: per-pixel entropy and status flags of a tile of scores, and the
launch plumbing (device guard, flag buffer).

Tiles of scores put the class axis first, ``[BLOCK_C, *pixels]``, so every per-pixel reduction is over axis 0.
Launchers pick the pixel extent so that the compiler keeps a pixel's classes in one thread (see the header of
each kernel module): these reductions then need no shuffles or shared memory, and with C a ``tl.constexpr``
the padded classes fold away.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from fastral.ops._common import FLAG_NEGATIVE, FLAG_NONFINITE, FLAG_SUM_RANGE, FLT_MAX, FLT_MIN

_NONFINITE = tl.constexpr(FLAG_NONFINITE)
_NEGATIVE = tl.constexpr(FLAG_NEGATIVE)
_SUM_RANGE = tl.constexpr(FLAG_SUM_RANGE)
_FLT_MIN = tl.constexpr(FLT_MIN)
_FLT_MAX = tl.constexpr(FLT_MAX)


@triton.jit
def _xlogx(x):
    """``x log x`` with ``0 log 0 = 0`` (and 0 for padding or negative x, which the caller flags)."""
    return x * tl.log(tl.where(x > 0, x, 1.0))


@triton.jit
def _pixel_scores(ptrs, mask, valid, FROM_LOGITS: tl.constexpr):
    """Load scores ``[BLOCK_C, *P]`` (class axis 0) and compute each pixel's entropy and status flags.

    ``mask`` (``[BLOCK_C, *P]``) says which scores to read: classes below C of the ``valid`` pixels (``[*P]``).
    Returns ``(x, w, s, h, flags)``: the scores in float32 (-inf for logits, 0 for probabilities where not read),
    the unnormalised class weights ``w`` (``e^(z - max z)`` or the probabilities as given) and their sum ``s``,
    so ``w / s`` is the pixel's distribution, the entropy ``h`` and the int32 flags of the valid pixels.

    From logits ``h = log s - sum_c w_c (z_c - max z) / s``: one exp per class and one log per pixel. Every
    non-finite logit makes ``h`` NaN, so checking ``h`` per pixel finds them; finite logits whose spread
    overflows float32 are computed exactly (see the clamp). From probabilities ``h = log s - sum_c x_c log x_c / s``
    (the pixel normalised first); non-finite scores are tested one by one (finite ones can overflow ``s``), and
    a sum outside float32's normal range is flagged (FLAG_SUM_RANGE).
    """
    if FROM_LOGITS:
        x = tl.load(ptrs, mask=mask, other=float("-inf")).to(tl.float32)
        z = x - tl.max(x, 0, keep_dims=True)
        # Finite logits whose spread overflows float32 give z = -inf: clamp to -128, where e^z is 0 all the same
        # (an input -inf, and the padding, stay -inf: the first makes h NaN and is flagged, the second is masked).
        z = tl.where((z < -128.0) & (x > float("-inf")), -128.0, z)
        w = tl.exp(z)
        s = tl.sum(w, 0)
        h = tl.log(s) - tl.sum(tl.where(mask, w * z, 0.0), 0) / s
        flags = tl.where(valid & ~(tl.abs(h) < float("inf")), _NONFINITE, 0)
    else:
        x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        w = x
        s = tl.sum(x, 0)
        h = tl.log(s) - tl.sum(_xlogx(x), 0) / s
        # Finite probabilities can overflow s too (flagged below), so test the scores themselves.
        nonfinite = tl.max(tl.where(mask & ~(tl.abs(x) < float("inf")), 1, 0), 0) > 0
        flags = tl.where(valid & nonfinite, _NONFINITE, 0)
        flags |= tl.where(valid & (tl.min(x, 0) < 0), _NEGATIVE, 0)
        flags |= tl.where(valid & ~((s >= _FLT_MIN) & (s <= _FLT_MAX)), _SUM_RANGE, 0)
    return x, w, s, h, flags


@triton.jit
def _report_flags(flags_ptr, flags):
    """OR per-pixel flags into the call's flag word: an atomic only for a pixel with a flag, none when clean."""
    tl.atomic_or(flags_ptr + flags * 0, flags, mask=flags != 0)


def device_guard(t: torch.Tensor):
    """Make ``t``'s GPU current, so Triton launches on that device's current torch stream."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def new_flags(device: torch.device) -> torch.Tensor:
    return torch.zeros(1, dtype=torch.int32, device=device)


def check_plane_size(op: str, numel: int) -> None:
    """Kernels index within one image (or one MC sample of it) in int32, and between images in int64."""
    if numel >= 2**31:
        raise ValueError(f"{op}: the Triton backend needs C * H * W < 2**31 per image, got {numel}")
