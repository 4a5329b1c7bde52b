"""The argument tuples of the two compiled modules' kernels, one function per kernel: raw addresses, dtype codes and
sizes, in the order of the contract's field lists (``FASTRAL_<KERNEL>_ARGS`` in ``csrc/contract.h``), the same for
``fastral._C`` and ``fastral._C_cuda``. The tensors must stay alive (and contiguous) until the kernel returns.

Each module adds its own last arguments: the CPU module its OpenMP thread count, the CUDA module a status word,
scratch memory and the stream (:mod:`fastral.ops._cpp`, :mod:`fastral.ops._cuda`).
"""

from __future__ import annotations

from ._common import DTYPE_CODES, ptr


def _stack_dims(x, sample_last: bool) -> tuple[int, int, int, int, int]:
    """``(T, B, C, H, W)`` of a stack laid out ``[T, B, C, H, W]`` or (``sample_last``) ``[B, C, H, W, T]``."""
    return (x.shape[4], *x.shape[:4]) if sample_last else tuple(x.shape)


def region_stats(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean) -> tuple:
    B, C, H, W = x.shape
    dims = (B, C, H, W, ptr(mask), *region, *pool, from_logits)
    return ptr(x), DTYPE_CODES[x.dtype], *dims, ptr(counts), ptr(entropy_pool), ptr(entropy_mean)


def kl_histogram(p, q, bins, range, exclude_self, eps, out) -> tuple:
    (M, C), N = p.shape, q.shape[0]
    lo, hi = range if range is not None else (0.0, 0.0)
    return ptr(p), M, ptr(q), N, C, bins, range is None, lo, hi, exclude_self, eps, ptr(out)


def bald_stacked(x, sample_last, from_logits, bald, entropy) -> tuple:
    dims = _stack_dims(x, sample_last)
    return ptr(x), DTYPE_CODES[x.dtype], *dims, sample_last, from_logits, ptr(bald), ptr(entropy)


def bald_update(x, sample_last, from_logits, first, sum_p, sum_h) -> tuple:
    dims = _stack_dims(x, sample_last)
    return ptr(x), DTYPE_CODES[x.dtype], *dims, sample_last, from_logits, first, ptr(sum_p), ptr(sum_h)


def bald_finalize(sum_p, sum_h, T, bald, entropy) -> tuple:
    return ptr(sum_p), ptr(sum_h), T, *sum_p.shape, ptr(bald), ptr(entropy)
