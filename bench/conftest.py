"""Shared benchmark harness: machine facts, one timing core, throughput figures in `extra_info`.

Each benchmark module defines its workload once and times every provider (the compiled backend, the eager PyTorch
reference, ``torch.compile(reference)``, and outside baselines) on the same inputs in the same run, after checking
the outputs agree. `pytest bench/ --benchmark-disable` (CI) runs each provider once on a small workload, so the
harness and the parity checks cannot rot; a real run (`pytest bench/`) uses the full workloads.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time

import pytest
import torch

import fastral


@pytest.fixture(scope="session")
def full_size(request) -> bool:
    """Full workloads when timing; small ones under --benchmark-disable (CI)."""
    return not request.config.getoption("benchmark_disable")


@pytest.fixture(scope="session")
def machine(full_size) -> dict:
    """Facts every result records: CPU, threads, versions, and the measured memory bandwidth (read + write)."""
    src = torch.ones(64 * 2**20 if full_size else 2**20)  # 256 MiB: far beyond the caches
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastral": fastral.__version__,
        "cpu_isa": _cpu_isa(),
        "copy_gb_per_s": 2 * src.numel() * 4 / best / 1e9,
    }


def _cpu_isa() -> str:
    try:
        return fastral.backends.cpp_module().isa()
    except Exception as exc:  # the compiled module is missing or predates isa(): record why
        return f"unknown ({type(exc).__name__})"


def run(benchmark, machine, group: str, provider: str, fn, *, bytes_read: int, work: dict | None = None):
    """Time ``fn`` (a whole workload) as ``provider`` in ``group`` and record effective throughput.

    ``bytes_read`` is the input read once (effective GB/s); ``work`` maps a unit (e.g. "pairs") to its count per
    call, recorded as units per second.
    """
    benchmark.group = group
    benchmark.extra_info.update(machine)
    benchmark.extra_info["provider"] = provider
    result = benchmark.pedantic(fn, rounds=3, warmup_rounds=1)  # runs fn once under --benchmark-disable
    if not benchmark.disabled:
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["gb_per_s"] = bytes_read / seconds / 1e9
        benchmark.extra_info["fraction_of_copy_bandwidth"] = bytes_read / seconds / 1e9 / machine["copy_gb_per_s"]
        for unit, count in (work or {}).items():
            benchmark.extra_info[f"{unit}_per_s"] = count / seconds
    return result


def compiled(fn):
    """``torch.compile(fn)``, skipped under --benchmark-disable (a compile costs ~20 s and times nothing)."""
    return torch.compile(fn, dynamic=False)


@pytest.fixture
def skip_compile_when_disabled(benchmark):
    if benchmark.disabled:
        pytest.skip("torch.compile providers only run when timing (each compile costs ~20 s)")


_PEAK_PROBE = """
import json
def _rss_kib(field):  # VmRSS (now) or VmHWM (peak since the last reset), in KiB
    return int(next(line for line in open('/proc/self/status') if line.startswith(field)).split()[1])
{setup}
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak: imports and set-up do not count
_base = _rss_kib('VmRSS')
{work}
print(json.dumps((_rss_kib('VmHWM') - _base) * 1024))
"""


def peak_bytes_added(setup: str, work: str) -> int:
    """Peak RSS that ``work`` adds over the RSS after ``setup``, run in a fresh Python process (Linux)."""
    script = _PEAK_PROBE.format(setup=setup, work=work)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)
