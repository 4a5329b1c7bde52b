"""BALD of T = 20 MC-dropout samples of logits (workloads.BALD_STACKED / BALD_STREAMING: [1, 19, 512, 1024] on
the CPU), stacked and streaming, against baal's numpy formula; and the peak memory of the streaming accumulator."""

import numpy as np
import pytest
import scipy.special
import torch
from harness import measure, peak_bytes_added, run, workload_fixtures
from workloads import BALD_STACKED, BALD_STREAMING, DEVICE, providers

inputs, expected = workload_fixtures(BALD_STACKED)


@pytest.mark.parametrize("provider", providers(BALD_STACKED))
def test_bald_stacked(benchmark, machine, provider, inputs, expected):
    measure(benchmark, machine, BALD_STACKED, provider, inputs, expected)


@pytest.mark.parametrize("provider", providers(BALD_STREAMING))
def test_bald_streaming(benchmark, machine, provider, inputs, expected):
    measure(benchmark, machine, BALD_STREAMING, provider, inputs, expected)


def numpy_xlogy_bald(probs: np.ndarray) -> np.ndarray:
    """baal's BALD heuristic: H(mean_t p) - mean_t H(p) with scipy.special.xlogy over a [T, B, C, H, W] stack."""
    mean = probs.mean(0)
    return -scipy.special.xlogy(mean, mean).sum(1) + scipy.special.xlogy(probs, probs).sum(2).mean(0)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="a CPU baseline")
def test_numpy_xlogy_baal_style(benchmark, machine, inputs, expected):
    probs = torch.softmax(inputs[0], 2).numpy()  # baal takes probabilities: the softmax is not timed
    out = run(
        benchmark,
        machine,
        BALD_STACKED.group,
        "numpy xlogy (baal's formula, probabilities)",
        lambda: numpy_xlogy_bald(probs),
        bytes_read=probs.nbytes,
    )
    BALD_STACKED.check((torch.from_numpy(out),), expected, inputs)


MC_SAMPLES = """
import torch, fastral
T, shape = 20, (1, 19, 512, 1024)
def sample(t):  # stands for one MC-dropout forward
    return torch.randn(shape, generator=torch.Generator().manual_seed(t))
"""
STACKED = "fastral.reference_bald(torch.stack([sample(t) for t in range(T)]))"  # needs every sample at once
STREAMING = """
acc = fastral.BaldAccumulator()
for t in range(T):
    acc.update(sample(t))
acc.compute()
"""


def test_streaming_peak_memory_is_10x_below_stacked_reference():
    """Peak RSS added from the first sample on, at T = 20 on [1, 19, 512, 1024], each in a fresh process (CI too)."""
    stacked, streaming_peak = peak_bytes_added(MC_SAMPLES, STACKED), peak_bytes_added(MC_SAMPLES, STREAMING)
    print(f"peak memory: stacked reference {stacked / 2**20:.0f} MiB, streaming {streaming_peak / 2**20:.0f} MiB")
    assert streaming_peak * 10 <= stacked, (stacked, streaming_peak)
