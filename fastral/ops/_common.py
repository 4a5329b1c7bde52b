"""Plumbing shared by the ops: output allocation, kernel status flags, raw-pointer arguments for the compiled
modules, and the region grid."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .._validate import describe, pair

# Status bits the kernels return (or the torch backend computes) after reading the scores; the op then raises.
FLAG_NONFINITE = 1  # a NaN or +-inf score
FLAG_NEGATIVE = 2  # a negative probability (from_logits=False)
# A pixel whose probabilities (from_logits=False) sum to zero, below float32's smallest normal number or beyond its
# largest: the kernels normalise in float32, so every backend refuses such sums rather than compute garbage.
FLAG_SUM_RANGE = 4
FLT_MIN = float(torch.finfo(torch.float32).tiny)  # 1.18e-38
FLT_MAX = float(torch.finfo(torch.float32).max)  # 3.40e38

# Dtype codes the compiled modules and their raw pointers agree on.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

# When True every output is filled with a poison value (NaN, or INT32_MIN for integers) before a kernel runs, so
# a test notices any element a kernel forgot to write. Tests switch it on; it costs a memset otherwise.
POISON_OUTPUTS = False


def empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    if POISON_OUTPUTS:
        out.fill_(torch.iinfo(dtype).min if not dtype.is_floating_point else float("nan"))
    return out


def raise_for_flags(op: str, name: str, flags: int, t: torch.Tensor) -> None:
    if flags & FLAG_NONFINITE:
        if t.dtype == torch.float64 and bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{op}: argument '{name}' holds float64 values beyond float32's range (|x| > {FLT_MAX:.4g}); every "
                f"backend computes in float32: rescale them ({describe(t)})"
            )
        raise ValueError(f"{op}: argument '{name}' contains NaN or infinite values ({describe(t)})")
    if flags & FLAG_NEGATIVE:
        raise ValueError(
            f"{op}: argument '{name}' holds probabilities (from_logits=False) and must be >= 0, "
            f"but contains negative values ({describe(t)})"
        )
    if flags & FLAG_SUM_RANGE:
        raise ValueError(
            f"{op}: argument '{name}' holds probabilities (from_logits=False) but has a pixel whose probabilities "
            f"are all zero or sum outside float32's normal range [{FLT_MIN:.4g}, {FLT_MAX:.4g}]; normalise or "
            f"rescale them ({describe(t)})"
        )


_warned_probabilities: set[str] = set()


def warn_if_probabilities(op: str, x: torch.Tensor, class_dim: int) -> None:
    """Warn (once per op) when scores passed as logits look like probabilities: every value in [0, 1] and every
    pixel summing to 1. 64 pixels, gathered without copying the scores, decide whether the full check runs, so
    logits cost almost nothing."""
    if op in _warned_probabilities or not x.numel():
        return
    if not _look_like_probabilities(_pixel_sample(x, class_dim).float(), -1):
        return
    if not _look_like_probabilities(x, class_dim):
        return
    _warned_probabilities.add(op)
    message = (
        f"{op}: the scores look like probabilities (every pixel in [0, 1], summing to 1) but from_logits=True "
        "reads them as logits; pass from_logits=False if they are"
    )
    warnings.warn(message, stacklevel=3)


def _pixel_sample(x: torch.Tensor, class_dim: int, count: int = 64) -> torch.Tensor:
    """The scores of up to ``count`` pixels spread evenly over ``x``, ``[count, C]``: an index gather, no copy of
    ``x`` (reshaping a strided view would copy all of it)."""
    moved = x.movedim(class_dim, -1)
    pixels = moved.shape[:-1].numel()
    index = torch.linspace(0, pixels - 1, steps=min(pixels, count), dtype=torch.float64).long()
    return moved[torch.unravel_index(index.to(x.device), moved.shape[:-1])]


def _look_like_probabilities(p: torch.Tensor, class_dim: int) -> bool:
    if not bool(((p >= 0) & (p <= 1)).all()):
        return False
    return bool(((p.sum(class_dim, dtype=torch.float32) - 1).abs() <= 1e-3).all())


def score_flags(x: torch.Tensor, from_logits: bool, class_dim: int) -> int:
    """The status flags of scores, computed with torch: the torch backend's share of the kernels' work."""
    if not bool(torch.isfinite(x).all()):
        return FLAG_NONFINITE
    if x.dtype == torch.float64 and x.numel() and float(x.abs().max()) > FLT_MAX:
        return FLAG_NONFINITE  # what the kernels see once the scores are float32
    if from_logits:
        return 0
    flags = FLAG_NEGATIVE if bool((x < 0).any()) else 0
    total = x.sum(class_dim, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    return flags | (FLAG_SUM_RANGE if bool(((total < FLT_MIN) | (total > FLT_MAX)).any()) else 0)


def kernel_input(t: torch.Tensor, dtypes=tuple(DTYPE_CODES)) -> torch.Tensor:
    """The input as compiled and Triton kernels read it: contiguous, in one of ``dtypes`` (the score dtypes).

    No copy for a contiguous tensor of such a dtype; any other (float64, say) is read as a float32 copy.
    """
    if t.dtype not in dtypes:
        t = t.float()
    return t.contiguous()


def ptr(t: torch.Tensor | None) -> int:
    """Address of a tensor's data for the compiled modules (0 for "absent")."""
    return 0 if t is None else t.data_ptr()


def num_threads() -> int:
    """The compiled CPU kernels use as many OpenMP threads as torch does (torch.set_num_threads sets both)."""
    return torch.get_num_threads()


def region_grid(height: int, width: int, region: int | tuple[int, int]) -> tuple[int, int]:
    """Regions per column and per row: the grid of non-overlapping (rh, rw) regions anchored at the top-left.

    A remainder that does not fill a region is dropped. Regions are numbered row-major within an image, images
    one after another: region ``r = (b * ny + iy) * nx + ix`` covers rows ``iy*rh .. iy*rh+rh-1`` and columns
    ``ix*rw .. ix*rw+rw-1`` of image ``b``. Every op and fastral's AL loop use this order.

    Raises TypeError / ValueError naming the argument for a size that is not an int >= 0 or a region that is not
    a positive (rh, rw) pair.
    """
    sizes = []
    for name, value in (("height", height), ("width", width)):
        # torch.SymInt: a symbolic size while torch.compile traces with dynamic shapes (kept symbolic, not int())
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, torch.SymInt)):
            raise TypeError(f"region_grid: argument '{name}' must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"region_grid: argument '{name}' must be >= 0, got {value}")
        sizes.append(int(value) if isinstance(value, np.integer) else value)
    rh, rw = pair("region_grid", "region", region)
    return sizes[0] // rh, sizes[1] // rw


def region_view(maps: torch.Tensor, region: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W]`` per-pixel maps as ``[R, rh, rw]`` region tiles in region order (a copy)."""
    B, H, W = maps.shape
    rh, rw = region
    ny, nx = region_grid(H, W, region)
    tiles = maps[:, : ny * rh, : nx * rw].reshape(B, ny, rh, nx, rw)
    return tiles.permute(0, 1, 3, 2, 4).reshape(B * ny * nx, rh, rw)


def region_means(maps: torch.Tensor, region: tuple[int, int], ignore_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``[B, H, W]`` maps over each region's non-ignored pixels, ``[R]``; 0 for a fully ignored region."""
    tiles = region_view(maps, region).flatten(1)
    if ignore_mask is None:
        return tiles.mean(1)
    valid = ~region_view(ignore_mask, region).flatten(1)
    total = torch.where(valid, tiles, torch.zeros((), dtype=tiles.dtype, device=tiles.device)).sum(1)
    return total / valid.sum(1).clamp_min(1)
