"""region_stats on one Cityscapes frame of logits [1, 19, 1024, 2048], 128x128 regions, 8x8 entropy pooling."""

import pytest
import torch
from conftest import compiled, run

import fastral
from fastral import reference_region_stats, region_stats

REGION, POOL = (128, 128), (8, 8)
GROUP = "region_stats [1,19,1024,2048] f32 logits"


@pytest.fixture(scope="module")
def frame(full_size):
    shape = (1, 19, 1024, 2048) if full_size else (1, 19, 256, 512)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3


@pytest.fixture(scope="module")
def expected(frame):
    return reference_region_stats(frame.double(), REGION, POOL)


def check(out, expected):
    assert torch.equal(torch.as_tensor(out.counts).long(), expected.counts)
    torch.testing.assert_close(torch.as_tensor(out.entropy_pool).double(), expected.entropy_pool, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(torch.as_tensor(out.entropy_mean).double(), expected.entropy_mean, atol=2e-5, rtol=2e-5)


def test_cpp(benchmark, machine, frame, expected):
    if reason := fastral.available_backends("cpu", "region_stats")["cpp"]:
        pytest.skip(reason)
    out = run(benchmark, machine, GROUP, "cpp", lambda: region_stats(frame, REGION, POOL, backend="cpp"),
              bytes_read=frame.numel() * 4)  # fmt: skip
    check(out, expected)


def test_torch_eager(benchmark, machine, frame, expected):
    out = run(benchmark, machine, GROUP, "torch eager (reference)", lambda: reference_region_stats(frame, REGION, POOL),
              bytes_read=frame.numel() * 4)  # fmt: skip
    check(out, expected)


def test_torch_compile(benchmark, machine, frame, expected, skip_compile_when_disabled):
    fn = compiled(reference_region_stats)
    out = run(benchmark, machine, GROUP, "torch.compile (reference)", lambda: fn(frame, REGION, POOL),
              bytes_read=frame.numel() * 4)  # fmt: skip
    check(out, expected)
