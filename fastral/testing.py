"""Helpers of fastral's parity suites and benchmarks: the device under test and its backends, reproducible seeds,
poisoned outputs, input generators, the tolerance table and comparison helpers. Importable from ``tests/`` and
``bench/`` alike (``python -m pytest tests bench`` is one command), and by code that tests its own use of the ops.
Needs the ``[test]`` extra (pytest).

Environment:
  FASTRAL_TEST_DEVICE=cuda         run the parity suites on the GPU (backends torch, triton, cuda); default cpu
                                   (backends torch, cpp, and triton in Triton's CPU interpreter).
  FASTRAL_REQUIRE_BACKENDS=cpp,... backends that must be available: CI sets it so a broken build fails instead of
                                   skipping.
  FASTRAL_TEST_SEED=<int>          replay the inputs of a failing run: every test's generator starts from this seed
                                   (by default each run draws a fresh one and prints it on failure).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import scipy.stats
import torch

import fastral
from fastral.ops import _common

DEVICE = torch.device(os.environ.get("FASTRAL_TEST_DEVICE", "cpu"))
DEVICE_BACKENDS = {"cpu": ("torch", "cpp", "triton"), "cuda": ("torch", "triton", "cuda")}[DEVICE.type]
REQUIRED = [b for b in os.environ.get("FASTRAL_REQUIRE_BACKENDS", "").split(",") if b]

# Tolerances of float outputs against the float64 reference, for every backend and input dtype: kernels read the
# same (possibly fp16/bf16) input values the reference upcasts exactly, so only float32 accumulation differs.
TOLERANCE = {
    "entropy": {"atol": 2e-5, "rtol": 2e-5},  # pixel entropy statistics, <= log C
    "bald": {"atol": 3e-5, "rtol": 0.0},  # a difference of two entropies: absolute error
    "probability": {"atol": 1e-6, "rtol": 1e-5},  # running sums of probabilities
    "rerun": {"atol": 1e-6, "rtol": 1e-6},  # one backend against itself (other thread counts, ISAs): reordered sums
}

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def backend_params(op: str, *, fast_only: bool = False) -> list:
    """pytest params for each backend of ``op`` on the device under test, skipped (with why) when unavailable.

    ``fast_only`` also skips Triton's CPU interpreter, for shapes too large for it (~5 ms per program).
    """
    params = []
    available = fastral.available_backends(DEVICE, op)
    for name in DEVICE_BACKENDS:
        reason = available[name].reason
        if not reason and fast_only and name == "triton" and DEVICE.type == "cpu":
            reason = "too large for Triton's CPU interpreter"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def input_seed() -> int:
    """The seed of a test's inputs: ``FASTRAL_TEST_SEED`` if set, else a fresh random one."""
    fixed = os.environ.get("FASTRAL_TEST_SEED")
    return int(fixed) if fixed else int.from_bytes(os.urandom(4), "little")


@contextlib.contextmanager
def poisoned_outputs():
    """Fill every op output with NaN / INT32_MIN before a kernel runs, so an unwritten element fails a check."""
    previous, _common.POISON_OUTPUTS = _common.POISON_OUTPUTS, True
    try:
        yield
    finally:
        _common.POISON_OUTPUTS = previous


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
    """A random bool mask, True (ignored) for about ``fraction`` of the pixels."""
    return torch.rand(shape, generator=rng) < fraction


def non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a strided view (every other column of a larger tensor)."""
    big = torch.empty((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype, device=x.device)
    big[..., ::2] = x
    view = big[..., ::2]
    assert not view.is_contiguous() or view.numel() <= 1
    return view


def assert_close(actual, expected, kind: str, name: str) -> None:
    """``actual`` (any array kind, any device) equals the reference ``expected`` within ``TOLERANCE[kind]``."""
    actual = torch.as_tensor(actual).cpu().double()
    assert not torch.isnan(actual).any(), f"{name}: NaN in output (an unwritten element?)"
    torch.testing.assert_close(actual, expected.cpu().double(), **TOLERANCE[kind], msg=lambda m: f"{name}: {m}")


def assert_equal(actual, expected, name: str) -> None:
    """Integer outputs: exactly equal."""
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


# kl_histogram: the default eps; the rounding of a float32 KL value (|KL| <~ 20 with eps = 1e-7, C <= 20 terms),
# doubled because the adaptive range's edges move with the rounding of the row's min and max; the float64
# reference gets 1e-9.
KL_EPS = 1e-7
KL_DELTA = {"float32": 4e-5, "float64": 1e-9}


def scipy_kl_rows(p, q, exclude_self=False):
    """KL(p_i || q_j) for every j, row by row, exactly as scipy.stats.entropy computes it (float64)."""
    p = np.maximum(p.reshape(-1, p.shape[-1]).double().numpy(), KL_EPS)
    q = np.maximum(q.double().numpy(), KL_EPS)
    rows = []
    for i, pi in enumerate(p):
        kl = scipy.stats.entropy(pi[None, :], q, axis=1)
        rows.append(np.delete(kl, i) if exclude_self else kl)
    return rows


def check_kl_histogram_against_scipy(hist, p, q, bins, value_range, exclude_self, delta):
    """Every row of a kl_histogram output (eps = KL_EPS) is the histogram of its exact KL values, up to values
    within ``delta`` of a bin edge (:func:`assert_histogram_row_matches`), and such values are rare."""
    hist = torch.as_tensor(hist).cpu().double().reshape(-1, bins).numpy()
    rows = scipy_kl_rows(p, q, exclude_self)
    assert hist.shape[0] == len(rows)
    ambiguous = 0
    for i, (h, kl) in enumerate(zip(hist, rows, strict=True)):
        ambiguous += assert_histogram_row_matches(h, kl, bins, value_range, len(kl), delta, f"row {i}")
    total = sum(len(kl) for kl in rows)
    assert ambiguous <= max(2, 0.02 * total), f"{ambiguous} of {total} KL values lie within {delta} of a bin edge"
