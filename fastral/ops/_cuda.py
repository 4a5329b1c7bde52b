"""Tensor-level launchers of the ``cuda`` backend: :mod:`fastral._C_cuda` over raw device addresses.

Each launcher takes the checked, contiguous tensors its op prepared (scores float32/float16/bfloat16, outputs
preallocated) and runs the kernels on torch's current stream of the tensors' device (for CuPy inputs that is CuPy's
stream: see :func:`fastral._arrays.stream_context`). Scratch memory (status flags, workspaces) comes from torch's
caching allocator on the same stream. Launchers that return status flags synchronise that stream once.
"""

from __future__ import annotations

import torch

from .. import backends
from ._common import DTYPE_CODES, ptr


def _stream(device: torch.device) -> tuple[int, int]:
    """(device ordinal, stream handle) arguments of every _C_cuda call."""
    return device.index, torch.cuda.current_stream(device).cuda_stream


def _flags(device: torch.device) -> torch.Tensor:
    """A device int32 word the kernels report status bits into (zeroed by _C_cuda)."""
    return torch.empty(1, dtype=torch.int32, device=device)


def _workspace(nbytes: int, device: torch.device) -> torch.Tensor | None:
    return torch.empty(nbytes, dtype=torch.uint8, device=device) if nbytes else None


def region_stats_cuda(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean) -> int:
    B, C, H, W = x.shape
    mask = None if mask is None else mask.contiguous()
    flags = _flags(x.device)
    return backends.cuda_module().region_stats(
        ptr(x), DTYPE_CODES[x.dtype], B, C, H, W, ptr(mask), *region, *pool, from_logits,
        ptr(counts), ptr(entropy_pool), ptr(entropy_mean), ptr(flags), *_stream(x.device),
    )  # fmt: skip


def kl_histogram_cuda(p, q, bins, range, exclude_self, eps, out) -> None:
    mod = backends.cuda_module()
    (M, C), N = p.shape, q.shape[0]
    lo, hi = range if range is not None else (0.0, 0.0)
    nbytes = mod.kl_histogram_workspace_bytes(M, N, C, bins)
    workspace = _workspace(nbytes, p.device)
    mod.kl_histogram(
        ptr(p), M, ptr(q), N, C, bins, range is None, lo, hi, exclude_self, eps, ptr(out),
        ptr(workspace), nbytes, *_stream(p.device),
    )  # fmt: skip


def bald_stacked_cuda(x, from_logits, bald, entropy) -> int:
    mod = backends.cuda_module()
    T, B, C, H, W = x.shape
    code = DTYPE_CODES[x.dtype]
    nbytes = mod.bald_stacked_workspace_bytes(code, B, C, H, W, *_stream(x.device))
    workspace = _workspace(nbytes, x.device)
    flags = _flags(x.device)
    return mod.bald_stacked(
        ptr(x), code, T, B, C, H, W, from_logits, ptr(bald), ptr(entropy), ptr(workspace), nbytes, ptr(flags),
        *_stream(x.device),
    )  # fmt: skip


def bald_update_cuda(x, from_logits, first, sum_p, sum_h) -> int:
    B, C, H, W = x.shape
    flags = _flags(x.device)
    return backends.cuda_module().bald_update(
        ptr(x), DTYPE_CODES[x.dtype], B, C, H, W, from_logits, first, ptr(sum_p), ptr(sum_h), ptr(flags),
        *_stream(x.device),
    )  # fmt: skip


def bald_finalize_cuda(sum_p, sum_h, T, bald, entropy) -> None:
    B, C, H, W = sum_p.shape
    backends.cuda_module().bald_finalize(
        ptr(sum_p), ptr(sum_h), T, B, C, H, W, ptr(bald), ptr(entropy), *_stream(sum_p.device)
    )
