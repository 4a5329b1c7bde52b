"""RALIS state and action features, computed with fastral's featurizer ops.

Layout per region (the paper's and the official code's; D = (C+1) + 3*ph*pw, = 212 on Cityscapes, 204 on CamVid):

  [0, C+1)          predicted class distribution: argmax counts / valid pixels, with a last "ignore" slot that
                    predictions never fill (kept so the layout and the KL inputs match the official code)
  [C+1, D)          min, mean and max pixel entropy pooled on a ph x pw grid, each flattened row-major

An action (candidate region) appends two ``bins``-bin KL histograms (the gate's input, always the last columns):
KL(candidate's predicted distribution || each labelled region's ground-truth distribution) and
KL(candidate || every candidate of this step, itself included), both with numpy's adaptive per-row range.

Deliberate deviations from the official code (also in the docs):
  * class counts are fractions of the region's valid pixels rather than raw pixel counts floored at 1e-7. The
    first layer of every path is a BatchNorm, so within a data set this only rescales a feature; fractions keep
    features comparable across region sizes.
  * regions are numbered row-major (fastral.region_grid) instead of x-major; any fixed order serves the state
    path's Linear(R -> 128).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import kl_histogram, region_stats

KL_BINS = 32


class RegionFeatures(NamedTuple):
    base: torch.Tensor  #: [R, (C+1) + 3*ph*pw] float32: class distribution + pooled entropy
    class_dist: torch.Tensor  #: [R, C+1] float32 predicted class distribution (last slot: ignore, 0)
    entropy_mean: torch.Tensor  #: [R] float32 mean pixel entropy (the Entropy baseline's score)


def class_distribution(counts: torch.Tensor, ignored: torch.Tensor | None = None) -> torch.Tensor:
    """``[R, C]`` class pixel counts (+ optional ``[R]`` ignored-pixel counts) as ``[R, C+1]`` fractions."""
    ignored = torch.zeros(len(counts), dtype=counts.dtype, device=counts.device) if ignored is None else ignored
    full = torch.cat([counts, ignored[:, None]], 1).float()
    return full / full.sum(1, keepdim=True).clamp_min(1)


def region_features(
    logits: torch.Tensor, region: tuple[int, int], pool: tuple[int, int] = (8, 8), backend: str = "auto"
) -> RegionFeatures:
    """Features of every grid region of ``[B, C, H, W]`` logits, in fastral.region_grid order."""
    stats = region_stats(logits, region, pool, backend=backend)
    dist = class_distribution(stats.counts)
    base = torch.cat([dist, stats.entropy_pool.flatten(1)], 1)
    return RegionFeatures(base, dist, stats.entropy_mean)


def action_features(
    base: torch.Tensor, class_dist: torch.Tensor, labelled_dist: torch.Tensor, bins: int = KL_BINS,
    backend: str = "auto",
) -> torch.Tensor:  # fmt: skip
    """``[M, D + 2*bins]`` action features of M candidates: base features, then the two KL histograms.

    ``labelled_dist`` is ``[L, C+1]``: ground-truth class fractions of every labelled region, ignore slot last
    (zeros when nothing is labelled yet, as in the official code).
    """
    to_labelled = kl_histogram(class_dist, labelled_dist, bins, backend=backend)
    to_pool = kl_histogram(class_dist, class_dist, bins, backend=backend)
    return torch.cat([base, to_labelled, to_pool], 1)
