"""The benchmark workloads of fastral's ops, defined once for the CPU and the GPU.

The pytest-benchmark files (``bench_region_stats.py``, ``bench_bald.py``, ``bench_kl_histogram.py``) time every
provider of each workload on the device ``FASTRAL_BENCH_DEVICE`` names (default cpu), after checking its output
against the float64 reference; ``bench/gpu_check.py`` runs those files on a GPU. Providers: the compiled backends
of the device (``cpp`` on the CPU; ``cuda`` and ``triton`` on a GPU), the eager PyTorch reference and
``torch.compile`` of it.

Sizes: ``ci`` under ``--benchmark-disable`` (each provider runs once on small inputs), else ``FASTRAL_BENCH_SIZE``:
``cpu`` (default on the CPU: one Cityscapes frame, the figures of bench/README.md), ``gpu`` (default on a GPU:
8 frames, a 335,000-row KL pool) or ``gpu-quick``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import fastral
from fastral import BaldAccumulator, bald, kl_histogram, reference_bald, reference_kl_histogram, region_stats
from fastral import reference_region_stats as reference_stats
from fastral.testing import TOLERANCE

DEVICE = torch.device(os.environ.get("FASTRAL_BENCH_DEVICE", "cpu"))
SIZES = ("ci", "cpu", "gpu", "gpu-quick")
EAGER, COMPILED = "torch eager (reference)", "torch.compile (reference)"


def size(disabled: bool) -> str:
    """The size of this run's workloads: ``ci`` when benchmarks are disabled, else FASTRAL_BENCH_SIZE or the
    device's default."""
    if disabled:
        return "ci"
    chosen = os.environ.get("FASTRAL_BENCH_SIZE") or ("cpu" if DEVICE.type == "cpu" else "gpu")
    if chosen not in SIZES:
        raise ValueError(f"FASTRAL_BENCH_SIZE must be one of {SIZES}, got {chosen!r}")
    return chosen


def backends() -> tuple[str, ...]:
    """The compiled backends timed on the benchmark device."""
    return ("cpp",) if DEVICE.type == "cpu" else ("cuda", "triton")


@dataclass(frozen=True)
class Workload:
    """One op on one family of inputs. ``inputs`` are a tuple; every callable takes them unpacked."""

    op: str  #: the fastral op it times
    group: str  #: the label results are grouped under
    shapes: dict[str, Any]  #: per size, what ``make`` builds
    make: Callable[[Any, torch.device], tuple]  #: ``make(shapes[size], device)`` -> inputs
    run: Callable[..., Any]  #: ``run(backend, *inputs)``: the op on a backend
    reference: Callable[..., Any]  #: ``reference(*inputs)``: the eager reference (also compiled)
    expected: Callable[..., Any]  #: ``expected(*inputs)``: float64 ground truth, or None where it cannot run
    check: Callable[[Any, Any, tuple], None]  #: ``check(output, expected, inputs)`` asserts agreement
    bytes_read: Callable[..., int]  #: input bytes read once (effective GB/s)
    pairs: Callable[..., int] | None = None  #: KL pairs per call, for pairs/s

    def inputs(self, size_name: str, device: torch.device = DEVICE) -> tuple:
        return self.make(self.shapes[size_name], device)


def providers(workload: Workload) -> list[str]:
    """The providers of ``workload`` on the benchmark device: compiled backends, then the references."""
    return [*backends(), EAGER, COMPILED] if workload.reference is not None else [*backends()]


def _logits(shape, device):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3).to(device)


# ---------------------------------------------------------------------------------------------- region_stats
REGION, POOL = (128, 128), (8, 8)


def _check_stats(out, expected, inputs) -> None:
    assert torch.equal(torch.as_tensor(out.counts).cpu().long(), expected.counts.cpu())
    for name in ("entropy_pool", "entropy_mean"):
        actual = torch.as_tensor(getattr(out, name)).cpu().double()
        torch.testing.assert_close(actual, getattr(expected, name).cpu(), **TOLERANCE["entropy"])


REGION_STATS = Workload(
    op="region_stats",
    group="region_stats f32 logits, 128x128 regions, 8x8 pools",
    shapes={
        "ci": (1, 19, 256, 512),
        "cpu": (1, 19, 1024, 2048),
        "gpu": (8, 19, 1024, 2048),
        "gpu-quick": (2, 19, 1024, 2048),
    },
    make=lambda shape, device: (_logits(shape, device),),
    run=lambda backend, x: region_stats(x, REGION, POOL, backend=backend),
    reference=lambda x: reference_stats(x, REGION, POOL),
    expected=lambda x: reference_stats(x.double(), REGION, POOL),
    check=_check_stats,
    bytes_read=lambda x: x.numel() * 4,
)


# ---------------------------------------------------------------------------------------------- bald
def _check_bald(out, expected, inputs) -> None:
    actual = out.bald if isinstance(out, fastral.BaldResult) else out[0]
    torch.testing.assert_close(torch.as_tensor(actual).cpu().double(), expected.cpu(), **TOLERANCE["bald"])


def streaming_bald(samples: torch.Tensor, backend: str):
    """BALD of the samples fed one at a time to a :class:`fastral.BaldAccumulator`."""
    acc = BaldAccumulator(backend=backend)
    for sample in samples:
        acc.update(sample)
    return acc.compute()


_BALD_SHAPES = {
    "ci": (20, 1, 19, 64, 128),
    "cpu": (20, 1, 19, 512, 1024),
    "gpu": (20, 2, 19, 1024, 2048),
    "gpu-quick": (5, 2, 19, 1024, 2048),
}
BALD_STACKED = Workload(
    op="bald",
    group="bald f32 logits, stacked",
    shapes=_BALD_SHAPES,
    make=lambda shape, device: (_logits(shape, device),),
    run=lambda backend, x: bald(x, backend=backend),
    reference=reference_bald,
    expected=lambda x: reference_bald(x.double())[0],
    check=_check_bald,
    bytes_read=lambda x: x.numel() * 4,
)
BALD_STREAMING = Workload(
    op="bald",
    group="bald f32 logits, streaming (BaldAccumulator, one update per sample)",
    shapes=_BALD_SHAPES,
    make=BALD_STACKED.make,
    run=lambda backend, x: streaming_bald(x, backend),
    reference=None,  # the stacked workload times the references on the same inputs
    expected=BALD_STACKED.expected,
    check=_check_bald,
    bytes_read=BALD_STACKED.bytes_read,
)


# ---------------------------------------------------------------------------------------------- kl_histogram
BINS, CLASSES, EPS = 32, 20, 1e-7


def distributions(rows: int, seed: int, device: torch.device = DEVICE) -> torch.Tensor:
    """Sparse count-like class distributions (C = 20), like the class counts of regions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, CLASSES, generator=g) * 1000
    return torch.where(torch.rand(rows, CLASSES, generator=g) < 0.5, 0.0, x).to(device)


def numpy_blocked_kl_histogram(p: np.ndarray, q: np.ndarray, bins: int, block: int = 512) -> np.ndarray:
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


def _check_histograms(out, expected, inputs) -> None:
    """Counts may differ only where a KL value rounds across a bin edge: at most a few in a thousand."""
    if expected is None:  # no float64 ground truth at this size: the rows must still be distributions
        assert torch.allclose(out.sum(1).cpu(), torch.ones(()), atol=1e-5)
        return
    n = inputs[1].shape[0]
    moved = np.abs(out.cpu().double().numpy() - np.asarray(expected, np.float64)).sum() * n / 2
    assert moved <= 2e-3 * out.shape[0] * n, f"{moved} of {out.shape[0] * n} values binned differently"


def _kl_expected_blocked(p, q):
    """numpy's float64 histograms, where that takes seconds (not at the GPU sizes)."""
    if p.shape[0] * q.shape[0] > 10**9:
        return None
    return numpy_blocked_kl_histogram(p.cpu().double().numpy(), q.cpu().double().numpy(), BINS)


KL_HISTOGRAM = Workload(
    op="kl_histogram",
    group="kl_histogram C=20 bins=32 adaptive",
    shapes={"ci": (2_000, 2_000), "cpu": (25_600, 25_600), "gpu": (25_600, 335_000), "gpu-quick": (2_560, 33_500)},
    make=lambda mn, device: (distributions(mn[0], 0, device), distributions(mn[1], 1, device)),
    run=lambda backend, p, q: kl_histogram(p, q, BINS, backend=backend),
    reference=None,  # its M x N matrix does not fit: KL_HISTOGRAM_SMALL times the references
    expected=_kl_expected_blocked,
    check=_check_histograms,
    bytes_read=lambda p, q: (p.numel() + q.numel()) * 4,
    pairs=lambda p, q: p.shape[0] * q.shape[0],
)
KL_HISTOGRAM_SMALL = Workload(
    op="kl_histogram",
    group="kl_histogram C=20 bins=32 adaptive, a tenth of the rows (the reference fits in memory)",
    shapes={"ci": (200, 2_000), "cpu": (2_560, 25_600), "gpu": (2_560, 25_600), "gpu-quick": (2_560, 25_600)},
    make=KL_HISTOGRAM.make,
    run=KL_HISTOGRAM.run,
    reference=lambda p, q: reference_kl_histogram(p, q, BINS),
    expected=lambda p, q: reference_kl_histogram(p.double(), q.double(), BINS).cpu().numpy(),
    check=_check_histograms,
    bytes_read=KL_HISTOGRAM.bytes_read,
    pairs=KL_HISTOGRAM.pairs,
)

WORKLOADS = {
    "region_stats": REGION_STATS,
    "bald_stacked": BALD_STACKED,
    "bald_streaming": BALD_STREAMING,
    "kl_histogram": KL_HISTOGRAM,
    "kl_histogram_small": KL_HISTOGRAM_SMALL,
}
