"""The benchmark harness: one timing core with throughput figures in ``extra_info``, the measurement of a
workload's provider (run, time, check against the float64 reference), and peak-memory probes in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import workloads

import fastral


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


def _synchronized(fn):
    """``fn`` followed by a device synchronisation, so GPU work is inside the timed call."""
    if workloads.DEVICE.type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(workloads.DEVICE)
        return out

    return call


def workload_fixtures(workload: workloads.Workload):
    """The module-scoped ``inputs`` and ``expected`` fixtures of a bench file's main workload (its inputs at the
    session's size and their float64 reference output, built once per file)."""

    @pytest.fixture(scope="module")
    def inputs(size):
        return workload.inputs(size)

    @pytest.fixture(scope="module")
    def expected(inputs):
        return workload.expected(*inputs)

    return inputs, expected


def provider_fn(workload: workloads.Workload, provider: str, inputs: tuple, disabled: bool):
    """The call ``provider`` makes on ``inputs``, or a skip saying why it cannot run here."""
    if provider == workloads.EAGER:
        return lambda: workload.reference(*inputs)
    if provider == workloads.COMPILED:
        if disabled:
            pytest.skip("torch.compile providers only run when timing (each compile costs ~20 s)")
        fn = torch.compile(workload.reference, dynamic=False)
        return lambda: fn(*inputs)
    status = fastral.available_backends(workloads.DEVICE, workload.op)[provider]
    if not status:
        pytest.skip(status.reason)
    return lambda: workload.run(provider, *inputs)


def measure(benchmark, machine, workload: workloads.Workload, provider: str, inputs: tuple, expected) -> None:
    """Time ``provider`` on ``workload`` (median of 3 rounds after a warm-up), then check its output."""
    fn = _synchronized(provider_fn(workload, provider, inputs, benchmark.disabled))
    pairs = workload.pairs(*inputs) if workload.pairs else None
    out = run(
        benchmark,
        machine,
        workload.group,
        provider,
        fn,
        bytes_read=workload.bytes_read(*inputs),
        work={"pairs": pairs} if pairs else None,
    )
    workload.check(out, expected, inputs)


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
