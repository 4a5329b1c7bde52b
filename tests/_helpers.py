"""Input generators, the tolerance table and comparison helpers shared by the parity suites."""

from __future__ import annotations

import numpy as np
import torch

# Tolerances of float outputs against the float64 reference, for every backend and input dtype: kernels read the
# same (possibly fp16/bf16) input values the reference upcasts exactly, so only float32 accumulation differs.
TOLERANCE = {
    "entropy": {"atol": 2e-5, "rtol": 2e-5},  # pixel entropy statistics, <= log C
    "bald": {"atol": 3e-5, "rtol": 0.0},  # a difference of two entropies: absolute error
    "probability": {"atol": 1e-6, "rtol": 1e-5},  # running sums of probabilities
}

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def logits(shape, rng, dtype=torch.float32, confident=False, class_dim=1) -> torch.Tensor:
    """Random logits. ``confident``: +-80 extremes, one random class per pixel at +80 and the rest at -80."""
    x = torch.randn(shape, generator=rng, dtype=torch.float64) * 3
    if confident:
        winner = torch.rand(shape, generator=rng).argmax(class_dim, keepdim=True)
        hot = torch.zeros(shape, dtype=torch.bool).scatter_(class_dim, winner, True)
        x = x + torch.where(hot, 80.0, -80.0)
    return x.to(dtype)


def probabilities(shape, rng, dtype=torch.float32, class_dim=1, zero_fraction=0.3) -> torch.Tensor:
    """Unnormalised non-negative scores with exact zeros (every pixel keeps at least one non-zero class)."""
    p = torch.rand(shape, generator=rng, dtype=torch.float64) * 2
    zeros = torch.rand(shape, generator=rng, dtype=torch.float64) < zero_fraction
    keep = torch.nn.functional.one_hot(p.argmax(class_dim), shape[class_dim]).movedim(-1, class_dim).bool()
    return torch.where(zeros & ~keep, 0.0, p).to(dtype)


def ignore_mask(shape, rng, fraction=0.2) -> torch.Tensor:
    return torch.rand(shape, generator=rng) < fraction


def non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a strided view (every other column of a larger tensor)."""
    big = torch.empty((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype, device=x.device)
    big[..., ::2] = x
    view = big[..., ::2]
    assert not view.is_contiguous() or view.numel() <= 1
    return view


def assert_close(actual, expected, kind: str, name: str) -> None:
    actual = torch.as_tensor(actual).cpu().double()
    assert not torch.isnan(actual).any(), f"{name}: NaN in output (an unwritten element?)"
    torch.testing.assert_close(actual, expected.cpu().double(), **TOLERANCE[kind], msg=lambda m: f"{name}: {m}")


def assert_equal(actual, expected, name: str) -> None:
    actual = torch.as_tensor(actual).cpu().long()
    expected = expected.cpu().long()
    if not torch.equal(actual, expected):
        bad = (actual != expected).nonzero()
        raise AssertionError(f"{name}: {len(bad)} of {actual.numel()} elements differ, first at {bad[0].tolist()}")


def numpy_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """np.histogram's bin edges for ``bins`` equal bins on [lo, hi], after its widening of an empty range."""
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def assert_histogram_row_matches(hist_row, values, bins, value_range, n, delta, name) -> int:
    """Check one normalised histogram row against the exact values it summarises.

    ``hist_row * n`` must be the histogram of ``values`` (float64) except that a value within ``delta`` of a bin
    edge may land on either side of it (a kernel computing in float32 may round across the edge; with an
    adaptive range the edges themselves move by the rounding of min and max). Proves that this is the only
    difference: every bin's count lies between the values surely in it and the values possibly in it, and the
    counts total the values in range. Returns the number of ambiguous values.
    """
    counts = np.asarray(hist_row, dtype=np.float64) * n
    assert np.allclose(counts, np.round(counts), atol=1e-3), f"{name}: row * N is not a count vector: {counts}"
    counts = np.round(counts).astype(np.int64)
    lo, hi = (values.min(), values.max()) if value_range is None else value_range
    edges = numpy_edges(lo, hi, bins)
    lo, hi = edges[0], edges[-1]

    def bin_of(v):
        idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1)
        if value_range is None:  # an adaptive range holds every value, whatever the rounding of its ends
            return idx
        return np.where((v < lo) | (v > hi), -1, idx)

    if value_range is None and values.min() == values.max():
        # numpy widens the empty range to +-0.5, which puts every value exactly on the middle edge (for an even
        # number of bins): numpy's float64 rounding then picks either side. fastral's rule is bin bins // 2.
        exact = np.histogram(values, bins=bins)[0]
        assert exact[sorted({(bins - 1) // 2, bins // 2})].sum() == len(values), f"{name}: numpy's bins {exact}"
        assert counts[bins // 2] == len(values) == counts.sum(), f"{name}: {counts} not all in bin {bins // 2}"
        return 0
    low_bin, high_bin = bin_of(values - delta), bin_of(values + delta)
    exact = np.histogram(values, bins=bins, range=(lo, hi))[0]
    sure = np.bincount(low_bin[(low_bin == high_bin) & (low_bin >= 0)], minlength=bins)
    possible = np.zeros(bins, dtype=np.int64)
    for a, b in zip(low_bin, high_bin, strict=True):
        first, last = (a, b) if a >= 0 else (0, b)
        if b < 0 and a < 0:
            continue
        if b < 0:
            last = bins - 1
        possible[first : last + 1] += 1
    ambiguous = int((low_bin != high_bin).sum())
    msg = f"{name}: counts {counts.tolist()} vs exact {exact.tolist()} ({ambiguous} values within {delta} of an edge)"
    assert (sure <= counts).all() and (counts <= possible).all(), msg
    in_range_low = ((low_bin >= 0) & (high_bin >= 0)).sum()
    in_range_high = ((low_bin >= 0) | (high_bin >= 0)).sum()
    assert in_range_low <= counts.sum() <= in_range_high, msg
    if ambiguous == 0:
        assert (counts == exact).all(), msg
    return ambiguous
