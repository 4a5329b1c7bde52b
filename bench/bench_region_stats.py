"""region_stats on Cityscapes frames of logits [B, 19, 1024, 2048], 128x128 regions, 8x8 entropy pooling
(workloads.REGION_STATS: one frame on the CPU, 8 on a GPU)."""

import pytest
from harness import measure, workload_fixtures
from workloads import REGION_STATS, providers

inputs, expected = workload_fixtures(REGION_STATS)


@pytest.mark.parametrize("provider", providers(REGION_STATS))
def test_region_stats(benchmark, machine, provider, inputs, expected):
    measure(benchmark, machine, REGION_STATS, provider, inputs, expected)
