"""Launchers of the ``cuda`` backend: :mod:`fastral._C_cuda` over raw device addresses.

Same entry points and arguments as every launcher module (see :mod:`fastral.ops._torch`); inputs arrive contiguous,
in a kernel dtype, stacks of samples in fastral's ``[T, B, C, H, W]`` layout (the CUDA kernels read no other). The
arguments both compiled modules take come from :mod:`fastral.ops._compiled`; the CUDA module adds a status word,
scratch memory and the stream. Kernels run on torch's current stream of the tensors' device (for CuPy inputs that
is CuPy's stream: see :func:`fastral._arrays.stream_context`); scratch comes from torch's caching allocator on the
same stream. Calls that return status flags synchronise that stream once.
"""

from __future__ import annotations

import torch

from .. import backends
from . import _compiled
from ._common import DTYPE_CODES, ptr


def _stream(device: torch.device) -> tuple[int, int]:
    """(device ordinal, stream handle): the last arguments of every _C_cuda call."""
    return device.index, torch.cuda.current_stream(device).cuda_stream


def _flags(device: torch.device) -> torch.Tensor:
    """A device int32 word the kernels report status bits into (zeroed by _C_cuda)."""
    return torch.empty(1, dtype=torch.int32, device=device)


def _workspace(nbytes: int, device: torch.device) -> torch.Tensor | None:
    return torch.empty(nbytes, dtype=torch.uint8, device=device) if nbytes else None


def region_stats(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean) -> int:
    args = _compiled.region_stats(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean)
    flags = _flags(x.device)
    return backends.cuda_module().region_stats(args, ptr(flags), *_stream(x.device))


def kl_histogram(p, q, bins, range, exclude_self, eps, out) -> None:
    mod = backends.cuda_module()
    (M, C), N = p.shape, q.shape[0]
    nbytes = mod.kl_histogram_workspace_bytes(M, N, C, bins)
    workspace = _workspace(nbytes, p.device)
    args = _compiled.kl_histogram(p, q, bins, range, exclude_self, eps, out)
    mod.kl_histogram(args, ptr(workspace), nbytes, *_stream(p.device))


def bald_stacked(x, sample_last, from_logits, bald, entropy) -> int:
    mod = backends.cuda_module()
    _, B, C, H, W = x.shape
    nbytes = mod.bald_stacked_workspace_bytes(DTYPE_CODES[x.dtype], B, C, H, W, *_stream(x.device))
    workspace = _workspace(nbytes, x.device)
    args = _compiled.bald_stacked(x, sample_last, from_logits, bald, entropy)
    flags = _flags(x.device)
    return mod.bald_stacked(args, ptr(workspace), nbytes, ptr(flags), *_stream(x.device))


def bald_update(x, sample_last, from_logits, first, sum_p, sum_h) -> int:
    args = _compiled.bald_update(x, sample_last, from_logits, first, sum_p, sum_h)
    flags = _flags(x.device)
    return backends.cuda_module().bald_update(args, ptr(flags), *_stream(x.device))


def bald_finalize(sum_p, sum_h, T, bald, entropy) -> None:
    backends.cuda_module().bald_finalize(
        _compiled.bald_finalize(sum_p, sum_h, T, bald, entropy), *_stream(sum_p.device)
    )
