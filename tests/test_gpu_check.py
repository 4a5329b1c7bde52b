"""bench/gpu_check.py cannot rot: its plan and table print without a GPU, its orchestrator skips what it cannot run
with the reason, and its bench section runs the benchmark registry on the CPU (tiny workloads)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_dry_run_prints_the_plan_and_a_table():
    result = run("--dry-run")
    assert result.returncode == 0, result.stderr
    assert "memcheck" in result.stdout and "vs compile" in result.stdout
    assert "7.9x" in result.stdout  # speed-up against torch.compile(reference), from the sample rows


def test_unknown_section_is_an_argument_error():
    result = run("--sections", "build,nope")
    assert result.returncode == 2 and "unknown section(s) ['nope']" in result.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present: the sections would run")
def test_sections_without_a_gpu_are_skipped_with_the_reason(tmp_path):
    result = run("--sections", "parity,memcheck,bench,racecheck", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for name, section in report["sections"].items():
        assert "no CUDA device" in section["skipped"], (name, section)
    assert "==== fastral gpu_check summary ====" in result.stdout


@pytest.mark.slow
def test_bench_section_runs_on_the_cpu(tmp_path):
    result = run("--sections", "bench", "--device", "cpu", "--size", "ci", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["sections"]["bench"]["rows"]
    providers = {(row["workload"].split()[0], row["provider"]) for row in rows if row["ms"] > 0}
    for op in ("region_stats", "bald", "kl_histogram"):
        assert (op, "cpp") in providers and (op, "torch eager (reference)") in providers, providers
    assert "vs compile" in result.stdout and "region_stats" in result.stdout
