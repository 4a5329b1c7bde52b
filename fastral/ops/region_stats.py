"""Per-region class counts and entropy pooling in one pass over segmentation scores."""

from __future__ import annotations

from typing import Any

import torch

from .._arrays import array_kind, as_tensor, stream_context, to_kind
from .._validate import check_float, check_mask, check_ndim, describe, pair
from ._common import empty, raise_for_flags, region_grid, warn_if_probabilities
from ._dispatch import launcher
from ._reference import RegionStats, pixel_entropy, reference_region_stats

__all__ = ["RegionStats", "pixel_entropy", "reference_region_stats", "region_stats"]

OP = "region_stats"


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
    region, pool, mask, R = _check(x, region, pool, ignore_mask)
    if torch.compiler.is_compiling():  # one node of the caller's graph: see _op below
        return RegionStats(*_op(x, list(region), list(pool), bool(from_logits), mask, backend))
    impl = launcher(OP, backend, x.device)
    if from_logits:
        warn_if_probabilities(OP, x, 1)
    counts, entropy_pool, entropy_mean = _empty_outputs(x, R, pool)
    if R:
        with stream_context(kind, x.device):
            kernel_mask = None if mask is None else impl.input(mask, (torch.bool,))
            args = region, pool, bool(from_logits), counts, entropy_pool, entropy_mean
            flags = impl.module.region_stats(impl.input(x), kernel_mask, *args)
        raise_for_flags(OP, "scores", flags, x)
    return RegionStats(to_kind(counts, kind), to_kind(entropy_pool, kind), to_kind(entropy_mean, kind))


def _check(x: torch.Tensor, region, pool, ignore_mask) -> tuple[tuple[int, int], tuple[int, int], Any, int]:
    """``(region, pool, mask, R)`` from the arguments, checked; reads shapes and dtypes only, never values (so
    it also runs on the fake tensors of torch.compile)."""
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
    return (rh, rw), (ph, pw), mask, B * ny * nx


def _empty_outputs(x: torch.Tensor, R: int, pool: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    C, (ph, pw) = x.shape[1], pool
    return (
        empty((R, C), torch.int32, x.device),
        empty((R, 3, ph, pw), torch.float32, x.device),
        empty((R,), torch.float32, x.device),
    )


# torch.compile: the op is one opaque custom op, fastral::region_stats, so a compiled caller keeps a single graph
# (fullgraph=True works). It runs the eager function above, with every check; its fake (meta) implementation
# gives the output shapes after the argument checks, so a bad argument is reported while compiling.
@torch.library.custom_op("fastral::region_stats", mutates_args=())
def _op(
    scores: torch.Tensor,
    region: list[int],
    pool: list[int],
    from_logits: bool,
    ignore_mask: torch.Tensor | None,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(region_stats(scores, tuple(region), tuple(pool), from_logits, ignore_mask, backend))


@_op.register_fake
def _(scores, region, pool, from_logits, ignore_mask, backend):
    _, pool, _, R = _check(scores, region, pool, ignore_mask)
    return _empty_outputs(scores, R, pool)  # under torch.compile's fake mode: fake tensors
