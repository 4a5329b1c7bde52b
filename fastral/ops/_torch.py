"""Launchers of the ``torch`` backend: the references of :mod:`fastral.ops._reference` behind the launcher contract.

Every backend's launcher module (this one, :mod:`fastral.ops._cpp`, :mod:`fastral.ops._cuda` and the Triton modules
``fastral.kernels.<op>``) has the same entry points with the same arguments: the op's checked inputs and its
preallocated outputs, which the launcher fills. Entry points that read scores return their status flags
(``FLAG_*``); the op raises for them. Here the flags come from :func:`score_flags` and the outputs are left
unwritten when a flag is set.

Unlike the compiled backends, these read any strides and dtype (float64 stays float64).
"""

from __future__ import annotations

import torch

from ._common import region_grid, score_flags
from ._reference import (
    bald_from_sums,
    pixel_entropy,
    probabilities,
    reference_bald,
    reference_kl_histogram,
    reference_region_stats,
)


def region_stats(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean) -> int:
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


def kl_histogram(p, q, bins, range, exclude_self, eps, out) -> None:
    out.copy_(reference_kl_histogram(p, q, bins, range, exclude_self, eps))


def _samples_first(x: torch.Tensor, sample_last: bool) -> torch.Tensor:
    return x.movedim(-1, 0) if sample_last else x


def bald_stacked(x, sample_last, from_logits, bald, entropy) -> int:
    x = _samples_first(x, sample_last)
    flags = score_flags(x, from_logits, 2)
    if not flags:
        ref_bald, ref_entropy = reference_bald(x, from_logits)
        bald.copy_(ref_bald)
        entropy.copy_(ref_entropy)
    return flags


def bald_update(x, sample_last, from_logits, first, sum_p, sum_h) -> int:
    x = _samples_first(x, sample_last)
    flags = score_flags(x, from_logits, 2)
    if not flags:
        xf = x.float()
        p = probabilities(xf, from_logits, 2).sum(0)
        h = pixel_entropy(xf, from_logits, class_dim=2).sum(0)
        if first:
            sum_p.copy_(p)
            sum_h.copy_(h)
        else:
            sum_p += p
            sum_h += h
    return flags


def bald_finalize(sum_p, sum_h, T, bald, entropy) -> None:
    ref_bald, ref_entropy = bald_from_sums(sum_p, sum_h, T)
    bald.copy_(ref_bald)
    entropy.copy_(ref_entropy)
