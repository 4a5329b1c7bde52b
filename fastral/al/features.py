"""RALIS state and action features, computed with fastral's featurizer ops.

Layout per region (the paper's and the official code's; D = (C+1) + 3*ph*pw, = 212 on Cityscapes, 204 on CamVid):

  [0, C+1)          predicted class distribution: argmax counts / region pixels, with a last "ignore" slot that
                    predictions never fill (kept so the layout matches the official code)
  [C+1, D)          min, mean and max pixel entropy pooled on a ph x pw grid, each flattened row-major

An action (candidate region) appends two ``bins``-bin KL histograms (the gate's input, always the last columns),
both with numpy's adaptive per-row range and computed from exactly the vectors the official code gives
``scipy.stats.entropy`` (``create_feature_vector_3H_region_kl_sim``, ``add_kl_pool2``, ``check_class_region``):

  * KL(candidate || each labelled region): the candidate side is its (C+1) raw predicted pixel counts floored at
    1e-7 (the official vector starts at 1e-7 and the counts are written in, so absent classes and the ignore slot
    stay 1e-7); the labelled side is the region's ground-truth class fractions over C+1 classes, void included as
    the last slot, 1e-7 for absent classes, not renormalised (:func:`ground_truth_distribution`). scipy, and
    :func:`fastral.kl_histogram` with ``eps=KL_EPS``, then normalise both rows to sum 1. All zeros when nothing
    is labelled yet.
  * KL(candidate || every candidate of this step, itself included): raw predicted counts floored at 1e-7 on both
    sides.

The floor is applied to *counts*, not fractions, on purpose: an absent class weighs 1e-7 / (rh*rw) after
normalisation, and each class a candidate predicts but a compared row lacks adds ~ln(rh*rw) nats more than with
fractions floored at 1e-7, so the two choices give different histograms on nearly every row.

Deliberate deviations from the official code (also in the docs):
  * the first C+1 columns (the class-count input of the state and action MLPs) are fractions of the region's
    pixels rather than raw pixel counts floored at 1e-7. The first layer of every path is a BatchNorm, so within
    a data set this only rescales a feature (up to the 1e-7 floor); fractions keep features comparable across
    region sizes. The KL histograms are not affected: they are computed from the raw counts
    (:attr:`RegionFeatures.class_counts`), as officially.
  * regions are numbered row-major (fastral.region_grid) instead of x-major; any fixed order serves the state
    path's Linear(R -> 128).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import kl_histogram, region_stats

KL_BINS = 32
KL_EPS = 1e-7  #: the official floor of every class vector that enters a KL divergence


class RegionFeatures(NamedTuple):
    base: torch.Tensor  #: [R, (C+1) + 3*ph*pw] float32: class fractions + pooled entropy
    class_counts: torch.Tensor  #: [R, C+1] float32 raw predicted pixel counts (last slot: ignore, always 0)
    entropy_mean: torch.Tensor  #: [R] float32 mean pixel entropy (the Entropy baseline's score)


def class_distribution(counts: torch.Tensor, ignored: torch.Tensor | None = None) -> torch.Tensor:
    """``[R, C]`` class pixel counts (+ optional ``[R]`` ignored-pixel counts) as ``[R, C+1]`` fractions."""
    ignored = torch.zeros(len(counts), dtype=counts.dtype, device=counts.device) if ignored is None else ignored
    full = torch.cat([counts, ignored[:, None]], 1).float()
    return full / full.sum(1, keepdim=True).clamp_min(1)


def ground_truth_distribution(counts: torch.Tensor) -> torch.Tensor:
    """``[L, C+1]`` ground-truth pixel counts of labelled regions (void last) as the official ``balance_cl``
    rows: fractions of the region's pixels, void included, ``KL_EPS`` for absent classes, not renormalised."""
    dist = class_distribution(counts[:, :-1], counts[:, -1])
    return torch.where(counts > 0, dist, torch.full_like(dist, KL_EPS))


def region_features(
    logits: torch.Tensor, region: tuple[int, int], pool: tuple[int, int] = (8, 8), backend: str = "auto"
) -> RegionFeatures:
    """Features of every grid region of ``[B, C, H, W]`` logits, in fastral.region_grid order."""
    stats = region_stats(logits, region, pool, backend=backend)
    counts = torch.cat([stats.counts, torch.zeros_like(stats.counts[:, :1])], 1).float()  # + the ignore slot
    base = torch.cat([class_distribution(stats.counts), stats.entropy_pool.flatten(1)], 1)
    return RegionFeatures(base, counts, stats.entropy_mean)


def action_features(
    base: torch.Tensor,
    class_counts: torch.Tensor,
    labelled_dist: torch.Tensor,
    bins: int = KL_BINS,
    backend: str = "auto",
) -> torch.Tensor:
    """``[M, D + 2*bins]`` action features of M candidates: base features, then the two KL histograms.

    ``class_counts`` is ``[M, C+1]``: the candidates' raw predicted pixel counts (:attr:`RegionFeatures.class_counts`;
    floored at ``KL_EPS`` here, as officially). ``labelled_dist`` is ``[L, C+1]``: the ground-truth rows of every
    labelled region from :func:`ground_truth_distribution` (``L = 0`` when nothing is labelled yet: zeros, as
    officially).
    """
    to_labelled = kl_histogram(class_counts, labelled_dist, bins, eps=KL_EPS, backend=backend)
    to_pool = kl_histogram(class_counts, class_counts, bins, eps=KL_EPS, backend=backend)
    return torch.cat([base, to_labelled, to_pool], 1)
