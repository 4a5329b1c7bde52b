"""Normalised histograms of KL divergences between class distributions, without the M x N matrix."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .._arrays import array_kind, as_tensor, stream_context, to_kind
from .._validate import check_finite, check_float, check_nonnegative, check_same_device, describe, positive_int
from ._common import empty
from ._dispatch import launcher
from ._reference import histogram_bins, normalize_distributions, reference_kl_histogram

__all__ = ["histogram_bins", "kl_histogram", "normalize_distributions", "reference_kl_histogram"]

OP = "kl_histogram"
FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # 1.1755e-38


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
    bins, range, eps = _check(pt, qt, bins, range, exclude_self, eps)
    if torch.compiler.is_compiling():  # one node of the caller's graph: see _op below
        return _op(pt, qt, bins, None if range is None else list(range), bool(exclude_self), eps, backend)
    for name, t in (("p", pt), ("q", qt)):
        check_finite(OP, name, t)
        check_nonnegative(OP, name, t)
        if t.numel() and not bool(torch.isfinite(t.float().sum(-1)).all()):  # every backend normalises in float32
            raise ValueError(
                f"{OP}: argument '{name}' has rows whose values or sum exceed float32's range "
                f"(3.4e38); rescale them (the histograms depend only on normalised rows), got "
                f"{describe(t)}"
            )

    M, N, C = math.prod(pt.shape[:-1]), qt.shape[0], pt.shape[-1]
    impl = launcher(OP, backend, pt.device)
    out = empty((*pt.shape[:-1], bins), torch.float32, pt.device)
    if M and N:
        # Pools flattened to [M, C]; the kernels read float32 (p and q are small: a copy is cheap).
        p2, q2 = (impl.input(t, (torch.float32,)) for t in (pt.reshape(M, C), qt))
        with stream_context(kind, pt.device):
            impl.module.kl_histogram(p2, q2, bins, range, bool(exclude_self), float(eps), out.view(M, bins))
    elif M:
        out.zero_()  # nothing to compare against: all-zero histograms, as the official code uses
    return to_kind(out, kind)


def _check(pt: torch.Tensor, qt: torch.Tensor, bins, range, exclude_self, eps) -> tuple[int, Any, float]:
    """``(bins, range, eps)`` checked and normalised, with the shapes of ``p`` and ``q``; reads no values (so it
    also runs on the fake tensors of torch.compile)."""
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
        raise ValueError(
            f"{OP}: argument 'eps' must be a float >= {FLOAT32_TINY:.4g} (float32's smallest normal "
            f"number: the fast backends compute in float32), got {eps!r}"
        )
    eps = float(eps)
    M = math.prod(pt.shape[:-1])
    N = qt.shape[0]
    if exclude_self and M != N:
        raise ValueError(
            f"{OP}: exclude_self=True pairs row i of p (flattened over pools) with row i of q, so p must have as "
            f"many rows as q; got {M} rows in p {describe(pt)} and {N} in q {describe(qt)}"
        )
    return bins, range, eps


# torch.compile: the op is one opaque custom op, fastral::kl_histogram, so a compiled caller keeps a single graph
# (fullgraph=True works). It runs the eager function above, with every check; its fake (meta) implementation
# gives the output shape after the argument checks, so a bad argument is reported while compiling.
@torch.library.custom_op("fastral::kl_histogram", mutates_args=())
def _op(
    p: torch.Tensor,
    q: torch.Tensor,
    bins: int,
    range: list[float] | None,
    exclude_self: bool,
    eps: float,
    backend: str,
) -> torch.Tensor:
    return kl_histogram(p, q, bins, None if range is None else tuple(range), exclude_self, eps, backend)


@_op.register_fake
def _(p, q, bins, range, exclude_self, eps, backend):
    bins, _, _ = _check(p, q, bins, range, exclude_self, eps)
    return torch.empty((*p.shape[:-1], bins), dtype=torch.float32, device=p.device)
