"""Benchmark fixtures: the workload size of the run and the machine facts every result records.

The workloads are defined once in ``workloads.py`` and timed with ``harness.py``. `pytest bench/
--benchmark-disable` (CI) runs each provider once on small inputs, so the harness and the parity checks cannot
rot; a real run (`pytest bench/`) uses the full workloads (see ``workloads.py`` for sizes and devices).
"""

from __future__ import annotations

import platform
import time

import pytest
import torch
import workloads

import fastral


@pytest.fixture(scope="session")
def size(request) -> str:
    """The workload size: ``ci`` under --benchmark-disable, else the full workloads of the device."""
    return workloads.size(request.config.getoption("benchmark_disable"))


@pytest.fixture(scope="session")
def full_size(size) -> bool:
    """Whether this run times full workloads (the benchmarks outside the registry size themselves by it)."""
    return size != "ci"


@pytest.fixture(scope="session")
def machine(size) -> dict:
    """Facts every result records: CPU, threads, versions, and the measured memory bandwidth (read + write)."""
    src = torch.ones(64 * 2**20 if size != "ci" else 2**20, device=workloads.DEVICE)  # 256 MiB: beyond the caches
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        if src.is_cuda:
            torch.cuda.synchronize(src.device)
        best = min(best, time.perf_counter() - start)
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastral": fastral.__version__,
        "device": str(workloads.DEVICE) if not src.is_cuda else torch.cuda.get_device_name(src.device),
        "size": size,
        "cpu_isa": _cpu_isa(),
        "copy_gb_per_s": 2 * src.numel() * 4 / best / 1e9,
    }


def _cpu_isa() -> str:
    try:
        return fastral.backends.cpp_module().isa()
    except Exception as exc:  # the compiled module is missing or predates isa(): record why
        return f"unknown ({type(exc).__name__})"
