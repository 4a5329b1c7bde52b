"""The pure-PyTorch references of the ops: the definition of correct that every backend is tested against.

They compute in float64 for float64 inputs and in float32 otherwise, and check nothing: the public ops check their
arguments, then run these for ``backend="torch"`` (through :mod:`fastral.ops._torch`). Each op module re-exports
its ``reference_<op>``; they live here so that the torch backend's launchers and the Triton kernels can use them
without importing an op module.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from ._common import region_grid, region_means, region_view


class RegionStats(NamedTuple):
    """Outputs of :func:`fastral.region_stats`; R regions in :func:`fastral.region_grid` order."""

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
    """The definition of :func:`fastral.region_stats` in plain PyTorch, on torch tensors.

    Computes in float64 for float64 scores and in float32 otherwise; returns torch tensors (counts int64).
    Does no argument checking: :func:`fastral.region_stats` checks, then calls this for ``backend="torch"``.
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


def normalize_distributions(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Rows floored at ``eps`` and divided by their sum, as ``scipy.stats.entropy(max(x, eps))`` sees them."""
    x = x.clamp_min(eps)
    return x / x.sum(-1, keepdim=True)


def histogram_bins(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """numpy's bin index of each value for ``bins`` equal bins on ``[lo, hi]`` (rows broadcast), -1 outside.

    Follows ``np.histogram`` to the last rounding: edges ``lo + i * (hi - lo) / bins`` with the last edge = hi,
    the index from ``(x - lo) * (bins / (hi - lo))``, then moved by one where that disagrees with the edges;
    the last bin is closed.
    """
    width = (hi - lo) / bins
    idx = torch.floor((values - lo) * (bins / (hi - lo))).clamp(0, bins - 1).long()

    def edge(i):
        return torch.where(i == bins, hi, lo + i * width)

    idx = idx - (values < edge(idx)).long()
    idx = idx + ((values >= edge(idx + 1)) & (idx != bins - 1)).long()
    return torch.where((values >= lo) & (values <= hi), idx.clamp(0, bins - 1), -1)


def reference_kl_histogram(
    p: torch.Tensor,
    q: torch.Tensor,
    bins: int = 32,
    range: tuple[float, float] | None = None,
    exclude_self: bool = False,
    eps: float = 1e-7,
) -> torch.Tensor:
    """The definition of :func:`fastral.kl_histogram` in plain PyTorch: builds the whole KL matrix (tests only).

    Computes in float64 for float64 inputs and in float32 otherwise; no argument checking.
    """
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    lead = p.shape[:-1]
    pn = normalize_distributions(p.reshape(-1, p.shape[-1]).to(dtype), eps)
    qn = normalize_distributions(q.to(dtype), eps)
    M, N = pn.shape[0], qn.shape[0]
    # KL(p_i || q_j) = sum_c p_ic log p_ic - sum_c p_ic log q_jc, clamped at 0 against rounding.
    kl = ((pn * pn.log()).sum(1, keepdim=True) - pn @ qn.log().T).clamp_min(0)
    keep = torch.ones_like(kl, dtype=torch.bool)
    if exclude_self:
        keep.fill_diagonal_(False)
    n_kept = N - 1 if exclude_self else N
    if range is None:
        lo = torch.where(keep, kl, math.inf).amin(1, keepdim=True)
        hi = torch.where(keep, kl, -math.inf).amax(1, keepdim=True)
        # numpy widens an empty range to +-0.5, which puts every value in the middle bin; say so directly rather
        # than trust the rounding of v - (v - 0.5) against the middle edge.
        same = lo == hi
        idx = torch.where(same, bins // 2, histogram_bins(kl, lo, torch.where(same, lo + 1, hi), bins))
    else:
        lo = torch.full((M, 1), float(range[0]), dtype=dtype, device=kl.device)
        hi = torch.full((M, 1), float(range[1]), dtype=dtype, device=kl.device)
        idx = histogram_bins(kl, lo, hi, bins)
    idx = torch.where(keep, idx, -1)
    rows = torch.arange(M, device=kl.device).unsqueeze(1).expand_as(idx)
    hist = torch.zeros(M * bins + 1, dtype=dtype, device=kl.device)
    hist.index_add_(0, torch.where(idx >= 0, rows * bins + idx, M * bins).flatten(), torch.ones_like(kl).flatten())
    hist = hist[:-1].reshape(*lead, bins)
    return hist / n_kept if n_kept > 0 else hist


def probabilities(x: torch.Tensor, from_logits: bool, class_dim: int) -> torch.Tensor:
    """Each pixel's class distribution: softmax of logits, or the probabilities normalised to sum 1."""
    return torch.softmax(x, class_dim) if from_logits else x / x.sum(class_dim, keepdim=True)


def reference_bald(scores: torch.Tensor, from_logits: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition of :func:`fastral.bald` in plain PyTorch: ``(bald [B, H, W], entropy [B, H, W])``.

    ``scores`` is ``[T, B, C, H, W]``. Probabilities are softmax(logits) or the input normalised per pixel;
    ``BALD = H[mean_t p_t] - mean_t H[p_t]`` with natural logs and ``0 log 0 = 0`` (no epsilon).
    Computes in float64 for float64 scores and in float32 otherwise; no argument checking.
    """
    x = scores if scores.dtype == torch.float64 else scores.float()
    mean_p = probabilities(x, from_logits, 2).mean(0)
    entropy = -torch.xlogy(mean_p, mean_p).sum(1)
    expected = pixel_entropy(x, from_logits, class_dim=2).mean(0)
    return entropy - expected, entropy


def bald_from_sums(sum_p: torch.Tensor, sum_h: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bald, entropy)`` ``[B, H, W]`` from the running sums of T samples' probabilities and entropies."""
    mean_p = sum_p / T
    entropy = -torch.xlogy(mean_p, mean_p).sum(1)
    return entropy - sum_h / T, entropy
