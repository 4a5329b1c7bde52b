"""BALD with T = 20 MC-dropout samples of [1, 19, 512, 1024] logits: stacked, streaming, and peak memory."""

import numpy as np
import pytest
import scipy.special
import torch
from conftest import compiled, peak_bytes_added, run

import fastral
from fastral import BaldAccumulator, bald, reference_bald

GROUP = "bald T=20 [1,19,512,1024] f32 logits"


@pytest.fixture(scope="module")
def samples(full_size):
    shape = (20, 1, 19, 512, 1024) if full_size else (20, 1, 19, 64, 128)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3


@pytest.fixture(scope="module")
def expected(samples):
    return reference_bald(samples.double())[0]


def needs_cpp():
    if reason := fastral.available_backends("cpu", "bald")["cpp"]:
        pytest.skip(reason)


def check(out_bald, expected):
    torch.testing.assert_close(torch.as_tensor(out_bald).double(), expected, atol=3e-5, rtol=0)


def streaming(samples, backend):
    acc = BaldAccumulator(backend=backend)
    for sample in samples:
        acc.update(sample)
    return acc.compute()


def test_cpp_stacked(benchmark, machine, samples, expected):
    needs_cpp()
    out = run(benchmark, machine, GROUP, "cpp stacked", lambda: bald(samples, backend="cpp"),
              bytes_read=samples.numel() * 4)  # fmt: skip
    check(out.bald, expected)


def test_cpp_streaming(benchmark, machine, samples, expected):
    needs_cpp()
    out = run(benchmark, machine, GROUP, "cpp streaming", lambda: streaming(samples, "cpp"),
              bytes_read=samples.numel() * 4)  # fmt: skip
    check(out.bald, expected)


def test_torch_eager(benchmark, machine, samples, expected):
    out = run(benchmark, machine, GROUP, "torch eager (reference)", lambda: reference_bald(samples),
              bytes_read=samples.numel() * 4)  # fmt: skip
    check(out[0], expected)


def test_torch_compile(benchmark, machine, samples, expected, skip_compile_when_disabled):
    fn = compiled(reference_bald)
    out = run(benchmark, machine, GROUP, "torch.compile (reference)", lambda: fn(samples),
              bytes_read=samples.numel() * 4)  # fmt: skip
    check(out[0], expected)


def numpy_xlogy_bald(probs: np.ndarray) -> np.ndarray:
    """baal's BALD heuristic: H(mean_t p) - mean_t H(p) with scipy.special.xlogy over a [T, B, C, H, W] stack."""
    mean = probs.mean(0)
    return -scipy.special.xlogy(mean, mean).sum(1) + scipy.special.xlogy(probs, probs).sum(2).mean(0)


def test_numpy_xlogy_baal_style(benchmark, machine, samples, expected):
    probs = torch.softmax(samples, 2).numpy()  # baal takes probabilities: the softmax is not timed
    out = run(benchmark, machine, GROUP, "numpy xlogy (baal's formula, probabilities)",
              lambda: numpy_xlogy_bald(probs), bytes_read=probs.nbytes)  # fmt: skip
    check(torch.from_numpy(out), expected)


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
