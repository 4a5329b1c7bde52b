"""kl_histogram, C = 20, 32 adaptive bins (workloads.KL_HISTOGRAM: M = N = 25,600 on the CPU, one official
Cityscapes test step; KL_HISTOGRAM_SMALL: a tenth of the rows, where the reference's matrix fits), against a
blocked numpy version; and the peak memory of the cpp kernel."""

import numpy as np
import pytest
from harness import measure, peak_bytes_added, run, workload_fixtures
from workloads import BINS, DEVICE, KL_HISTOGRAM, KL_HISTOGRAM_SMALL, numpy_blocked_kl_histogram, providers

import fastral

inputs, expected = workload_fixtures(KL_HISTOGRAM)


@pytest.mark.parametrize("provider", providers(KL_HISTOGRAM))
def test_kl_histogram(benchmark, machine, provider, inputs, expected):
    measure(benchmark, machine, KL_HISTOGRAM, provider, inputs, expected)


@pytest.mark.parametrize("provider", providers(KL_HISTOGRAM_SMALL))
def test_kl_histogram_small(benchmark, machine, provider, size):
    inputs = KL_HISTOGRAM_SMALL.inputs(size)
    measure(benchmark, machine, KL_HISTOGRAM_SMALL, provider, inputs, KL_HISTOGRAM_SMALL.expected(*inputs))


@pytest.mark.skipif(DEVICE.type != "cpu", reason="a CPU baseline")
def test_numpy_blocked(benchmark, machine, inputs):
    p, q = (t.numpy() for t in inputs)
    out = run(
        benchmark,
        machine,
        KL_HISTOGRAM.group,
        "numpy blocked (materialises the matrix)",
        lambda: numpy_blocked_kl_histogram(p.copy(), q.copy(), BINS),
        bytes_read=(p.size + q.size) * 4,
        work={"pairs": len(p) * len(q)},
    )
    assert np.allclose(out.sum(1), 1.0, atol=1e-5)


INPUTS = """
import torch, fastral
g = torch.Generator().manual_seed(0)
p, q = torch.rand(25_600, 20, generator=g), torch.rand(25_600, 20, generator=g)
"""


def test_cpp_never_materialises_the_matrix():
    """The peak RSS a call adds at M = N = 25,600 stays far below the 2.6 GB a float32 KL matrix would take
    (run in CI too)."""
    if not (cpp := fastral.available_backends("cpu", "kl_histogram")["cpp"]):
        pytest.skip(cpp.reason)
    grown = peak_bytes_added(INPUTS, 'fastral.kl_histogram(p, q, 32, backend="cpp")')
    print(f"kl_histogram peak memory growth: {grown / 2**20:.1f} MiB")
    assert grown < 128 * 2**20, grown
