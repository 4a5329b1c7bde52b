"""kl_histogram with M = N = 25,600 candidates, C = 20, 32 adaptive bins: one official Cityscapes test step."""

import numpy as np
import pytest
import torch
from conftest import compiled, peak_bytes_added, run

import fastral
from fastral import kl_histogram, reference_kl_histogram

BINS, C, EPS = 32, 20, 1e-7
GROUP = "kl_histogram M=N=25600 C=20 bins=32 adaptive"
GROUP_SMALL = "kl_histogram M=2560 N=25600 C=20 (reference fits in memory)"


def distributions(rows: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, C, generator=g) * 1000
    return torch.where(torch.rand(rows, C, generator=g) < 0.5, 0.0, x)  # sparse, like region class counts


@pytest.fixture(scope="module")
def pq(full_size):
    n = 25_600 if full_size else 2_000
    return distributions(n, 0), distributions(n, 1)


def numpy_blocked(p: np.ndarray, q: np.ndarray, bins: int, block: int = 512) -> np.ndarray:
    """A well-blocked vectorised numpy version: materialises the KL matrix one block of rows at a time."""
    p = np.maximum(p, EPS)
    p /= p.sum(1, keepdims=True)
    q = np.maximum(q, EPS)
    q /= q.sum(1, keepdims=True)
    log_q_t = np.log(q).T.copy()
    self_term = (p * np.log(p)).sum(1)
    M, N = p.shape[0], q.shape[0]
    out = np.empty((M, bins), np.float32)
    for start in range(0, M, block):
        kl = self_term[start : start + block, None] - p[start : start + block] @ log_q_t
        np.maximum(kl, 0, out=kl)
        lo, hi = kl.min(1, keepdims=True), kl.max(1, keepdims=True)
        same = (lo == hi).ravel()
        idx = np.minimum(((kl - lo) * (bins / np.where(hi > lo, hi - lo, 1))).astype(np.int64), bins - 1)
        idx[same] = bins // 2
        idx += np.arange(len(kl))[:, None] * bins
        out[start : start + len(kl)] = np.bincount(idx.ravel(), minlength=len(kl) * bins).reshape(-1, bins) / N
    return out


def assert_mostly_equal(out, expected, n):
    """Counts may differ only where a KL value rounds across a bin edge: at most a few in a thousand."""
    moved = np.abs(np.asarray(out, np.float64) - np.asarray(expected, np.float64)).sum() * n / 2
    assert moved <= 2e-3 * out.shape[0] * n, f"{moved} of {out.shape[0] * n} values binned differently"


def test_cpp(benchmark, machine, pq):
    if reason := fastral.available_backends("cpu", "kl_histogram")["cpp"]:
        pytest.skip(reason)
    p, q = pq
    out = run(benchmark, machine, GROUP, "cpp", lambda: kl_histogram(p, q, BINS, backend="cpp"),
              bytes_read=(p.numel() + q.numel()) * 4, work={"pairs": len(p) * len(q)})  # fmt: skip
    assert_mostly_equal(out.numpy(), numpy_blocked(p.double().numpy(), q.double().numpy(), BINS), len(q))


def test_numpy_blocked(benchmark, machine, pq):
    p, q = (t.numpy() for t in pq)
    out = run(benchmark, machine, GROUP, "numpy blocked (materialises the matrix)",
              lambda: numpy_blocked(p.copy(), q.copy(), BINS),
              bytes_read=(p.size + q.size) * 4, work={"pairs": len(p) * len(q)})  # fmt: skip
    assert np.allclose(out.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("provider", ["cpp", "torch eager (reference)", "torch.compile (reference)"])
def test_small_against_reference(benchmark, machine, pq, provider, request):
    """The PyTorch reference builds the whole matrix: compare with it on a tenth of the rows."""
    p, q = pq[0][: len(pq[0]) // 10], pq[1]
    if provider == "cpp":
        if reason := fastral.available_backends("cpu", "kl_histogram")["cpp"]:
            pytest.skip(reason)
        fn = lambda: kl_histogram(p, q, BINS, backend="cpp")  # noqa: E731
    elif provider.startswith("torch eager"):
        fn = lambda: reference_kl_histogram(p, q, BINS)  # noqa: E731
    else:
        request.getfixturevalue("skip_compile_when_disabled")
        ref = compiled(reference_kl_histogram)
        fn = lambda: ref(p, q, BINS)  # noqa: E731
    out = run(benchmark, machine, GROUP_SMALL, provider, fn,
              bytes_read=(p.numel() + q.numel()) * 4, work={"pairs": len(p) * len(q)})  # fmt: skip
    assert_mostly_equal(out.numpy(), reference_kl_histogram(p.double(), q.double(), BINS).numpy(), len(q))


INPUTS = """
import torch, fastral
g = torch.Generator().manual_seed(0)
p, q = torch.rand(25_600, 20, generator=g), torch.rand(25_600, 20, generator=g)
"""


def test_cpp_never_materialises_the_matrix():
    """The peak RSS a call adds at M = N = 25,600 stays far below the 2.6 GB a float32 KL matrix would take
    (run in CI too)."""
    if reason := fastral.available_backends("cpu", "kl_histogram")["cpp"]:
        pytest.skip(reason)
    grown = peak_bytes_added(INPUTS, 'fastral.kl_histogram(p, q, 32, backend="cpp")')
    print(f"kl_histogram peak memory growth: {grown / 2**20:.1f} MiB")
    assert grown < 128 * 2**20, grown
