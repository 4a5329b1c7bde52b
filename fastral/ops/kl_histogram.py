"""Normalised histograms of KL divergences between class distributions, without the M x N matrix."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .. import backends
from .._arrays import array_kind, as_tensor, stream_context, to_kind
from .._validate import check_finite, check_float, check_nonnegative, check_same_device, describe, positive_int
from ._common import empty, num_threads, ptr

OP = "kl_histogram"
FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # 1.1755e-38


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
    """The definition of :func:`kl_histogram` in plain PyTorch: builds the whole KL matrix (tests only).

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


def kl_histogram(
    p: Any,
    q: Any,
    bins: int = 32,
    range: tuple[float, float] | None = None,
    exclude_self: bool = False,
    eps: float = 1e-7,
    backend: str = "auto",
) -> Any:
    """Row i: the normalised histogram of ``KL(p_i || q_j)`` over all rows j of q. Never builds the M x N matrix.

    Args:
        p: ``[M, C]`` class distributions (counts or probabilities; float), or ``[K, M, C]`` for K pools at once.
        q: ``[N, C]`` class distributions compared against.
        bins: number of equal-width bins.
        range: ``None`` for a per-row adaptive range ``[min_j KL, max_j KL]`` (numpy's rules: the last bin is
            closed; an empty range widens to +-0.5, which puts all values in bin ``bins // 2``), or ``(lo, hi)``,
            where values outside are not counted.
        exclude_self: leave out ``j == i`` (p's rows flattened over pools); needs as many rows in q as in p.
            Row sums are then 1 over N - 1 values.
        eps: both sides are floored at ``eps`` and renormalised, as ``scipy.stats.entropy`` sees
            ``max(x, eps)``; so an all-zero row is the uniform distribution. Natural logs.

    Returns:
        ``[M, bins]`` (or ``[K, M, bins]``) float32, equal to ``np.histogram(kl_row, bins, range)[0] / N`` per row
        (up to a KL value within float32 rounding of a bin edge). All zeros when q has no rows.

    Example:
        >>> import numpy as np, fastral
        >>> rng = np.random.default_rng(0)
        >>> p, q = rng.random((5, 19), dtype=np.float32), rng.random((300, 19), dtype=np.float32)
        >>> h = fastral.kl_histogram(p, q, bins=32)
        >>> h.shape, bool(np.allclose(h.sum(1), 1))
        ((5, 32), True)
    """
    kind = array_kind(p)
    pt, qt = as_tensor(p, "p", OP), as_tensor(q, "q", OP)
    if pt.ndim not in (2, 3):
        raise ValueError(f"{OP}: argument 'p' must have 2 dimensions [M, C] or 3 [K, M, C], got {describe(pt)}")
    if qt.ndim != 2:
        raise ValueError(f"{OP}: argument 'q' must have 2 dimensions [N, C], got {describe(qt)}")
    for name, t in (("p", pt), ("q", qt)):
        check_float(OP, name, t, "class distributions (convert integer counts with .float() or .astype(np.float32))")
    check_same_device(OP, "q", qt, "p", pt)
    C = pt.shape[-1]
    if qt.shape[1] != C or C < 1:
        raise ValueError(
            f"{OP}: arguments 'p' and 'q' must have the same number (>= 1) of classes in their last dimension, "
            f"got p {describe(pt)} and q {describe(qt)}"
        )
    bins = positive_int(OP, "bins", bins)
    if range is not None:
        try:
            lo, hi = (float(v) for v in range)
        except (TypeError, ValueError):
            raise TypeError(
                f"{OP}: argument 'range' must be None or a pair (lo, hi) of floats, got {range!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{OP}: argument 'range' must be finite with lo < hi, got {range!r}")
        range = (lo, hi)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (FLOAT32_TINY <= eps < math.inf):
        raise ValueError(f"{OP}: argument 'eps' must be a float >= {FLOAT32_TINY:.4g} (float32's smallest normal "
                         f"number: the fast backends compute in float32), got {eps!r}")  # fmt: skip
    eps = float(eps)
    M = math.prod(pt.shape[:-1])
    N = qt.shape[0]
    if exclude_self and M != N:
        raise ValueError(
            f"{OP}: exclude_self=True pairs row i of p (flattened over pools) with row i of q, so p must have as "
            f"many rows as q; got {M} rows in p {describe(pt)} and {N} in q {describe(qt)}"
        )
    for name, t in (("p", pt), ("q", qt)):
        check_finite(OP, name, t)
        check_nonnegative(OP, name, t)
        if t.numel() and not bool(torch.isfinite(t.float().sum(-1)).all()):  # every backend normalises in float32
            raise ValueError(f"{OP}: argument '{name}' has rows whose values or sum exceed float32's range "
                             f"(3.4e38); rescale them (the histograms depend only on normalised rows), got "
                             f"{describe(t)}")  # fmt: skip

    name = backends.resolve(OP, backend, pt.device)
    out = empty((*pt.shape[:-1], bins), torch.float32, pt.device)
    if M and N:
        with stream_context(kind, pt.device):
            _launch(name, pt, qt, bins, range, bool(exclude_self), float(eps), out)
    elif M:
        out.zero_()  # nothing to compare against: all-zero histograms, as the official code uses
    return to_kind(out, kind)


def _launch(name, p, q, bins, range, exclude_self, eps, out) -> None:
    """Run backend ``name``: fills ``out`` (``[..., bins]``) with the histograms of every row of ``p``."""
    if name == "torch":
        out.copy_(reference_kl_histogram(p, q, bins, range, exclude_self, eps))
        return
    C = p.shape[-1]
    p2 = p.reshape(-1, C).float().contiguous()  # [M, C]: pools flattened; p and q are small, a copy is cheap
    q = q.float().contiguous()
    out2 = out.view(-1, bins)
    if name == "cpp":
        (M, C), N = p2.shape, q.shape[0]
        lo, hi = range if range is not None else (0.0, 0.0)
        backends.cpp_module().kl_histogram(
            ptr(p2), M, ptr(q), N, C, bins, range is None, lo, hi, exclude_self, eps, ptr(out2), num_threads()
        )
    elif name == "triton":
        backends.triton_module(OP).kl_histogram_triton(p2, q, bins, range, exclude_self, eps, out2)
    else:
        backends.cuda_ops().kl_histogram_cuda(p2, q, bins, range, exclude_self, eps, out2)
