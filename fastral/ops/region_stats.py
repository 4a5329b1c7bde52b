"""Per-region class counts and entropy pooling in one pass over segmentation scores."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .. import backends
from .._arrays import array_kind, as_tensor, stream_context, to_kind
from .._validate import check_float, check_mask, check_ndim, describe, pair
from ._common import (
    DTYPE_CODES,
    empty,
    kernel_input,
    num_threads,
    ptr,
    raise_for_flags,
    region_grid,
    region_means,
    region_view,
    score_flags,
    warn_if_probabilities,
)

OP = "region_stats"


class RegionStats(NamedTuple):
    """Outputs of :func:`region_stats`; R regions in :func:`fastral.region_grid` order."""

    counts: Any  #: ``[R, C]`` int32, pixels whose argmax class is c
    entropy_pool: Any  #: ``[R, 3, ph, pw]`` float32, min / mean / max pixel entropy per pooling window
    entropy_mean: Any  #: ``[R]`` float32, mean pixel entropy of the region


def pixel_entropy(x: torch.Tensor, from_logits: bool, class_dim: int = 1) -> torch.Tensor:
    """Shannon entropy (natural log) of each pixel's class distribution, reducing ``class_dim``.

    From logits: ``H = log(sum_c e^{z_c - m}) - sum_c softmax(z)_c (z_c - m)`` with ``m = max_c z_c``: no log of a
    probability, no epsilon, exact for confident pixels; ``z_c - m`` is clamped at the dtype's lowest finite value,
    where ``e^{z - m}`` is 0 anyway, so finite logits whose spread overflows give the exact entropy instead of NaN.
    From probabilities: the row is normalised first (as ``scipy.stats.entropy`` does),
    ``H = log S - sum_c p_c log p_c / S`` with ``0 log 0 = 0``.
    """
    if from_logits:
        z = (x - x.amax(class_dim, keepdim=True)).clamp_min(torch.finfo(x.dtype).min)
        e = z.exp()
        s = e.sum(class_dim)
        return s.log() - (e * z).sum(class_dim) / s
    s = x.sum(class_dim)
    return s.log() - torch.xlogy(x, x).sum(class_dim) / s


def reference_region_stats(
    scores: torch.Tensor,
    region: tuple[int, int],
    pool: tuple[int, int] = (8, 8),
    from_logits: bool = True,
    ignore_mask: torch.Tensor | None = None,
) -> RegionStats:
    """The definition of :func:`region_stats` in plain PyTorch, on torch tensors.

    Computes in float64 for float64 scores and in float32 otherwise; returns torch tensors (counts int64).
    Does no argument checking: :func:`region_stats` checks, then calls this for ``backend="torch"``.
    """
    x = scores if scores.dtype == torch.float64 else scores.float()
    B, C, H, W = x.shape
    rh, rw = region
    ph, pw = pool
    ny, nx = region_grid(H, W, region)
    R = B * ny * nx
    entropy = pixel_entropy(x, from_logits)  # [B, H, W]
    labels = x.argmax(1)  # ties go to the lowest class index

    # Class counts: one bincount over (region, class) ids of the non-ignored pixels.
    region_ids = torch.arange(R, device=x.device).reshape(R, 1, 1).expand(R, rh, rw)
    ids = region_ids * C + region_view(labels, region)
    if ignore_mask is not None:
        ids = ids[~region_view(ignore_mask, region)]
    counts = torch.bincount(ids.flatten(), minlength=R * C).reshape(R, C)

    # Entropy pooling over (rh // ph, rw // pw) windows, trailing rows/columns dropped (PyTorch pooling rules).
    kh, kw = rh // ph, rw // pw
    windows = region_view(entropy, region)[:, : ph * kh, : pw * kw].reshape(R, ph, kh, pw, kw).transpose(2, 3)
    windows = windows.reshape(R, ph, pw, kh * kw)
    if ignore_mask is None:
        pooled = torch.stack([windows.amin(-1), windows.mean(-1), windows.amax(-1)], 1)
    else:
        valid = ~region_view(ignore_mask, region)[:, : ph * kh, : pw * kw].reshape(R, ph, kh, pw, kw)
        valid = valid.transpose(2, 3).reshape(R, ph, pw, kh * kw)
        n = valid.sum(-1)
        inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
        lo = torch.where(valid, windows, inf).amin(-1)
        hi = torch.where(valid, windows, -inf).amax(-1)
        mean = torch.where(valid, windows, 0).sum(-1) / n.clamp_min(1)
        pooled = torch.stack([lo, mean, hi], 1).masked_fill((n == 0).unsqueeze(1), 0.0)  # empty window -> 0
    return RegionStats(counts, pooled, region_means(entropy, region, ignore_mask))


def region_stats(
    scores: Any,
    region: int | tuple[int, int],
    pool: int | tuple[int, int] = (8, 8),
    from_logits: bool = True,
    ignore_mask: Any = None,
    backend: str = "auto",
) -> RegionStats:
    """Per-region argmax class counts and min/mean/max entropy pooling of segmentation scores, in one pass.

    Args:
        scores: ``[B, C, H, W]`` logits (``from_logits=True``) or probabilities, float32/float16/bfloat16
            (float64 is read as a float32 copy). numpy in gives numpy out, torch gives torch, CuPy gives CuPy.
        region: ``(rh, rw)`` region size (or one int). Regions tile the image from the top-left; a remainder
            that does not fill a region is dropped. Region order: see :func:`fastral.region_grid`.
        pool: ``(ph, pw)`` cells of the entropy pooling grid per region. Windows are ``(rh // ph, rw // pw)``
            with stride = size; trailing rows/columns of a region are dropped, as in PyTorch pooling.
        from_logits: scores are logits (entropy via log-sum-exp, exact for confident pixels); otherwise
            non-negative probabilities, each pixel normalised to sum 1 as ``scipy.stats.entropy`` does.
        ignore_mask: optional ``[B, H, W]`` bool, True where a pixel is ignored: it counts for no class and no
            entropy statistic. A pooling window or region with no valid pixel gets entropy 0.
            Ignored pixels and pixels outside the region grid are never read.
        backend: ``"auto"``, ``"torch"``, ``"cpp"``, ``"triton"`` or ``"cuda"`` (see :mod:`fastral.backends`).

    Returns:
        :class:`RegionStats` ``(counts [R, C] int32, entropy_pool [R, 3, ph, pw] float32, entropy_mean [R]
        float32)`` with ``R = B * (H // rh) * (W // rw)``. Argmax ties go to the lowest class index. Entropy uses
        natural logs and float32 accumulation.

    Raises:
        TypeError / ValueError naming the argument: wrong rank or dtype, region larger than the image, a pool
        finer than the region, NaN/inf scores, float64 scores beyond float32's range, negative probabilities or
        pixels whose probabilities sum to 0 or outside float32's normal range.

    Example:
        >>> import numpy as np, fastral
        >>> logits = np.random.default_rng(0).normal(size=(1, 19, 256, 512)).astype(np.float32)
        >>> out = fastral.region_stats(logits, region=(128, 128))
        >>> out.counts.shape, out.entropy_pool.shape, out.entropy_mean.shape
        ((8, 19), (8, 3, 8, 8), (8,))
    """
    kind = array_kind(scores)
    x = as_tensor(scores, "scores", OP)
    check_ndim(OP, "scores", x, "[B, C, H, W]")
    check_float(OP, "scores", x)
    B, C, H, W = x.shape
    rh, rw = pair(OP, "region", region)
    ph, pw = pair(OP, "pool", pool)
    if C < 1:
        raise ValueError(f"{OP}: argument 'scores' must have at least one class, got {describe(x)}")
    if rh > H or rw > W:
        raise ValueError(f"{OP}: argument 'region' {(rh, rw)} is larger than the {H}x{W} image ({describe(x)})")
    if ph > rh or pw > rw:
        raise ValueError(
            f"{OP}: argument 'pool' {(ph, pw)} asks for more cells than the region {(rh, rw)} has pixels; "
            "each pooling window must hold at least one pixel"
        )
    mask = None if ignore_mask is None else check_mask(OP, "ignore_mask", ignore_mask, x, (B, H, W))
    ny, nx = region_grid(H, W, (rh, rw))
    R = B * ny * nx

    name = backends.resolve(OP, backend, x.device)
    if from_logits:
        warn_if_probabilities(OP, x, 1)
    counts = empty((R, C), torch.int32, x.device)
    entropy_pool = empty((R, 3, ph, pw), torch.float32, x.device)
    entropy_mean = empty((R,), torch.float32, x.device)
    if R:
        with stream_context(kind, x.device):
            flags = _launch(name, x, mask, (rh, rw), (ph, pw), bool(from_logits), counts, entropy_pool, entropy_mean)
        raise_for_flags(OP, "scores", flags, x)
    return RegionStats(to_kind(counts, kind), to_kind(entropy_pool, kind), to_kind(entropy_mean, kind))


def _launch(name: str, x: torch.Tensor, mask: torch.Tensor | None, *args) -> int:
    """Run backend ``name``; every backend fills the preallocated outputs in ``args`` and returns status flags."""
    if name == "torch":
        return _run_torch(x, mask, *args)
    x = kernel_input(x)
    if name == "cpp":
        return _run_cpp(x, mask, *args)
    if name == "triton":
        return backends.triton_module(OP).region_stats_triton(x, mask, *args)
    return backends.cuda_ops().region_stats_cuda(x, mask, *args)


def _run_torch(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean) -> int:
    rh, rw = region
    ny, nx = region_grid(*x.shape[2:], region)
    # Like the kernels, only non-ignored pixels inside the region grid are checked.
    grid = x[:, :, : ny * rh, : nx * rw]
    read = grid if mask is None else grid.movedim(1, -1)[~mask[:, : ny * rh, : nx * rw]]
    flags = score_flags(read, from_logits, 1 if mask is None else -1)
    if flags:
        return flags
    out = reference_region_stats(x, region, pool, from_logits, mask)
    counts.copy_(out.counts)
    entropy_pool.copy_(out.entropy_pool)
    entropy_mean.copy_(out.entropy_mean)
    return 0


def _run_cpp(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean) -> int:
    B, C, H, W = x.shape
    mask = None if mask is None else mask.contiguous()
    return backends.cpp_module().region_stats(
        ptr(x), DTYPE_CODES[x.dtype], B, C, H, W, ptr(mask), *region, *pool, from_logits,
        ptr(counts), ptr(entropy_pool), ptr(entropy_mean), num_threads(),
    )  # fmt: skip
