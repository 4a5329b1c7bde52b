#!/usr/bin/env python3
"""One-call GPU check of fastral's GPU backends: build, parity suites, compute-sanitizer, benchmarks.

Run it on a GPU machine from the repository root (torch with CUDA installed; no network needed):

    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "$OUT"

It only orchestrates: every section runs the project's own suites in a subprocess with its own time limit inside
a global budget (--budget); a section that cannot run (no GPU, no compute-sanitizer, no time left) is skipped with
the reason:

  build      FASTRAL_STRICT_BUILD=1 FASTRAL_CUDA_ARCHS=<--cuda-archs> pip install -e . --no-build-isolation
  parity     FASTRAL_TEST_DEVICE=cuda FASTRAL_REQUIRE_BACKENDS=cuda python -m pytest on PARITY_FILES (every
             backend of the device: torch, triton, cuda) with poisoned outputs
  memcheck   compute-sanitizer --tool memcheck over the parity tests marked ``sanitizer`` (small odd shapes that
             reach every kernel path), cuda backend, torch's caching allocator off
  bench      the pytest-benchmark files on the GPU (FASTRAL_BENCH_DEVICE=cuda, FASTRAL_BENCH_SIZE=<--size>): every
             workload of bench/workloads.py with every provider, checked against the float64 reference
  racecheck  compute-sanitizer --tool racecheck over the same marked tests, if time is left

Writes gpu_check.json (every number), bench.json (pytest-benchmark's) and one .log per section under --out, and
prints a short table last. `--dry-run` (no GPU needed) prints the plan and a table of made-up numbers to check the
formatting; `--device cpu --size ci` runs the bench section on the CPU (tests/test_gpu_check.py does, so this script
cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("build", "parity", "memcheck", "bench", "racecheck")
# Each section's own time limit (seconds); the global budget caps them further.
LIMITS = {"build": 240, "parity": 200, "memcheck": 150, "bench": 300, "racecheck": 120}
# The test files the parity and sanitizer sections run (the rest of tests/ does not touch the GPU kernels).
PARITY_FILES = ["test_region_stats.py", "test_kl_histogram.py", "test_bald.py", "test_backends.py"]
PARITY_FILES += ["test_interop.py", "test_cuda_build.py"]
BENCH_FILES = ["bench/bench_region_stats.py", "bench/bench_bald.py", "bench/bench_kl_histogram.py"]
# The registry's benchmarks are named test_<workload> (bench/workloads.py: WORKLOADS); the files' other tests
# (CPU baselines, peak memory in a fresh process) are not GPU measurements.
BENCH_SELECTION = " or ".join(
    f"test_{name}" for name in ("region_stats", "bald_stacked", "bald_streaming", "kl_histogram")
)


# ====================================================================== running sections


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd`` with output to ``log``; rc 124 when it ran past ``timeout``."""
    start = time.monotonic()
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        except OSError as exc:
            out.write(f"could not start: {exc}\n")
            rc = 127
    return {"rc": rc, "seconds": round(time.monotonic() - start, 1), "log": log.name, "tail": tail(log)}


def tail(log: Path, lines: int = 12) -> str:
    text = log.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def child_env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def find_cuda_tool(name: str) -> str | None:
    """A CUDA toolkit program: on PATH, else under CUDA_HOME or the usual install folders."""
    found = shutil.which(name)
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda", "/opt/cuda"):
        candidate = Path(home or "/nonexistent") / "bin" / name
        if candidate.exists():
            return str(candidate)
    return None


def section_build(out: Path, limit: float, cuda_archs: str) -> dict:
    nvcc = find_cuda_tool("nvcc")
    if nvcc is None:
        (out / "build.log").write_text("nvcc not found on PATH, under CUDA_HOME or /usr/local/cuda: cannot build\n")
        return {"ok": False, "rc": 127, "seconds": 0.0, "log": "build.log", "tail": tail(out / "build.log")}
    cmd = [sys.executable, "-m", "pip", "install", "-e", ".", "--no-build-isolation", "--no-deps", "--no-index"]
    env = child_env(FASTRAL_STRICT_BUILD="1", FASTRAL_CUDA_ARCHS=cuda_archs, CUDACXX=nvcc)
    result = run_logged(cmd, out / "build.log", limit, env)
    if result["rc"] == 0:  # the CUDA module is optional to the build: make sure it is there
        probe = [sys.executable, "-c", "import fastral._C_cuda as m; print('fastral._C_cuda:', m.__file__)"]
        check = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=60)
        with open(out / "build.log", "a") as log:
            log.write(check.stdout + check.stderr)
        result["tail"] = tail(out / "build.log")
        result["rc"] = check.returncode
    result["ok"] = result["rc"] == 0
    return result


def section_parity(out: Path, limit: float) -> dict:
    if not (ROOT / "tests").is_dir():
        return {"skipped": "no tests/ directory in this checkout"}
    cmd = [sys.executable, "-m", "pytest", *parity_files(), "-q", "--maxfail=25", "-p", "no:cacheprovider", "-rs"]
    cmd += ["--durations=8"]
    env = child_env(FASTRAL_TEST_DEVICE="cuda", FASTRAL_REQUIRE_BACKENDS="cuda")
    result = run_logged(cmd, out / "parity.log", limit, env)
    summary = [line for line in (out / "parity.log").read_text(errors="replace").splitlines() if " in " in line]
    result["summary"] = summary[-1].strip("= ") if summary else "no pytest summary (see parity.log)"
    result["ok"] = result["rc"] == 0
    return result


def parity_files() -> list[str]:
    return [f"tests/{name}" for name in PARITY_FILES if (ROOT / "tests" / name).exists()] or ["tests"]


def section_sanitizer(tool: str, out: Path, limit: float) -> dict:
    sanitizer = find_cuda_tool("compute-sanitizer")
    if sanitizer is None:
        return {"skipped": "compute-sanitizer not found on PATH or under CUDA_HOME"}
    cmd = [sanitizer, "--tool", tool, "--error-exitcode", "99", "--print-limit", "30", sys.executable, "-m"]
    cmd += ["pytest", *parity_files(), "-q", "-p", "no:cacheprovider", "-m", "sanitizer", "-k", "cuda"]
    # Without torch's caching allocator every tensor is its own allocation, so an access past its end is caught.
    env = child_env(FASTRAL_TEST_DEVICE="cuda", PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    result = run_logged(cmd, out / f"{tool}.log", limit, env)
    text = (out / f"{tool}.log").read_text(errors="replace")
    summary = [line for line in text.splitlines() if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
    result["summary"] = summary[-1].strip() if summary else "no sanitizer summary (see the log)"
    result["ok"] = result["rc"] == 0
    return result


def section_bench(out: Path, limit: float, device: str, size: str) -> dict:
    cmd = [sys.executable, "-m", "pytest", *BENCH_FILES, "-q", "-p", "no:cacheprovider", "-k", BENCH_SELECTION]
    cmd += [f"--benchmark-json={out / 'bench.json'}"]
    if device == "cpu":  # the self-test: torch.compile costs ~20 s per op on the CPU and checks nothing here
        cmd[-2] = f"({BENCH_SELECTION}) and not compile"
    result = run_logged(cmd, out / "bench.log", limit, child_env(FASTRAL_BENCH_DEVICE=device, FASTRAL_BENCH_SIZE=size))
    result["ok"] = result["rc"] == 0
    if (out / "bench.json").exists():
        result.update(bench_rows(json.loads((out / "bench.json").read_text())))
    return result


def bench_rows(report: dict) -> dict:
    """The table's rows from pytest-benchmark's JSON: one per (workload, provider)."""
    rows = []
    for b in report.get("benchmarks", []):
        info = b.get("extra_info", {})
        row = {"workload": b.get("group") or b["name"], "provider": info.get("provider", b["name"])}
        row["ms"] = b["stats"]["median"] * 1e3
        row["gb_per_s"] = info.get("gb_per_s")
        row["fraction_of_copy"] = info.get("fraction_of_copy_bandwidth")
        if info.get("pairs_per_s"):
            row["note"] = f"{info['pairs_per_s']:.3g} pairs/s"
        rows.append(row)
    copy = next((b["extra_info"].get("copy_gb_per_s") for b in report.get("benchmarks", [])), None)
    return {"rows": rows, "copy_gb_per_s": copy}


def orchestrate(args) -> int:
    out = args.out
    deadline = time.monotonic() + args.budget
    report: dict = {"env": environment(), "sections": {}}
    print(json.dumps(report["env"], indent=1))
    built = True
    for name in args.sections:
        left = deadline - time.monotonic()
        limit = min(LIMITS[name], left - 5)
        if limit < 20:
            result = {"skipped": f"no time left in the {args.budget:.0f} s budget"}
        elif name != "build" and not built:
            result = {"skipped": "the build failed (see build.log)"}
        elif name == "bench" and args.device == "cpu":
            result = section_bench(out, limit, "cpu", args.size)
        elif name != "build" and not report["env"].get("cuda_device"):
            result = {"skipped": f"no CUDA device visible to torch ({report['env'].get('cuda_error', '')})"}
        elif name == "build":
            result = section_build(out, limit, args.cuda_archs)
            built = result["ok"]
        elif name == "parity":
            result = section_parity(out, limit)
        elif name == "bench":
            result = section_bench(out, limit, "cuda", args.size)
        else:
            result = section_sanitizer(name, out, limit)
        report["sections"][name] = result
        print_section(name, result)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print_summary(report)
    return 0 if all(r.get("ok", True) for r in report["sections"].values()) else 1


def environment() -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "repo": str(ROOT)}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["cuda_device"] = props.name
            env["sms"] = props.multi_processor_count
            env["capability"] = f"{props.major}.{props.minor}"
            env["memory_gib"] = round(props.total_memory / 2**30, 1)
        else:
            env["cuda_error"] = "torch.cuda.is_available() is False"
    except Exception as exc:
        env["cuda_error"] = f"{type(exc).__name__}: {exc}"
    for module in ("triton", "cupy"):
        try:
            env[module] = __import__(module).__version__
        except Exception as exc:
            env[module] = f"unavailable ({type(exc).__name__})"
    for tool, flag in (("nvcc", "--version"), ("compute-sanitizer", "--version"), ("nvidia-smi", "-L")):
        path = find_cuda_tool("compute-sanitizer") if tool == "compute-sanitizer" else shutil.which(tool)
        try:
            text = subprocess.run([path, flag], capture_output=True, text=True, timeout=30).stdout if path else ""
            env[tool] = text.strip().splitlines()[-1] if text.strip() else "not found"
        except Exception as exc:
            env[tool] = f"failed ({type(exc).__name__})"
    return env


def print_section(name: str, result: dict) -> None:
    if "skipped" in result:
        print(f"[{name}] skipped: {result['skipped']}", flush=True)
        return
    status = "ok" if result.get("ok") else f"FAILED (rc {result.get('rc')})"
    print(f"[{name}] {status} in {result.get('seconds')} s; log {result.get('log')}", flush=True)
    if result.get("summary"):
        print(f"[{name}] {result['summary']}", flush=True)
    if not result.get("ok"):
        print("    " + result.get("tail", "").replace("\n", "\n    "), flush=True)


def print_summary(report: dict) -> None:
    print("\n==== fastral gpu_check summary ====")
    env = report["env"]
    print(f"device: {env.get('cuda_device', 'none')}  torch {env.get('torch')}  triton {env.get('triton')}")
    for name, result in report["sections"].items():
        state = "skipped: " + result["skipped"] if "skipped" in result else ("ok" if result.get("ok") else "FAILED")
        print(f"  {name:<10} {state}  {result.get('summary') or ''}")
    bench = report["sections"].get("bench", {})
    if bench.get("rows"):
        if bench.get("copy_gb_per_s"):
            print(f"\ncopy bandwidth (read + write): {bench['copy_gb_per_s']:.0f} GB/s")
        print(format_table(bench["rows"]))


COMPILED = "torch.compile (reference)"


def format_table(rows: list[dict]) -> str:
    """The benchmark table: one line per (workload, provider), with the speed-up against torch.compile."""
    compiled = {r["workload"]: r["ms"] for r in rows if r["provider"] == COMPILED and r.get("ms")}
    width = max([44, *(len(r["workload"]) for r in rows)])
    header = (
        f"{'workload':<{width}} {'provider':<26} {'median ms':>10} {'GB/s':>8} {'% copy':>7} {'vs compile':>10}  note"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ms = r.get("ms")
        if ms is None:
            blank = f"{'-':>10} {'-':>8} {'-':>7} {'-':>10}"
            lines.append(f"{r['workload']:<{width}} {r['provider']:<26} {blank}  {r.get('note', '')}")
            continue
        gbs = f"{r['gb_per_s']:.0f}" if r.get("gb_per_s") else "-"
        frac = f"{100 * r['fraction_of_copy']:.0f}%" if r.get("fraction_of_copy") else "-"
        ref = compiled.get(r["workload"])
        speed = f"{ref / ms:.1f}x" if ref else "-"
        figures = f"{ms:>10.3f} {gbs:>8} {frac:>7} {speed:>10}"
        lines.append(f"{r['workload']:<{width}} {r['provider']:<26} {figures}  {r.get('note', '')}")
    return "\n".join(lines)


def dry_run(args) -> int:
    print("plan (nothing runs):")
    for name in args.sections:
        print(f"  {name:<10} limit {LIMITS[name]} s")
    sanitizer = find_cuda_tool("compute-sanitizer") or "not found"
    print(f"  output: {args.out}/gpu_check.json, bench.json and one .log per section; compute-sanitizer: {sanitizer}")
    group = "region_stats f32 logits, 128x128 regions, 8x8 pools"
    rows = [
        {"workload": group, "provider": "cuda", "ms": 0.52, "gb_per_s": 2446.0, "fraction_of_copy": 0.82},
        {"workload": group, "provider": "triton", "ms": None, "note": "skipped: backend 'triton' is unavailable"},
        {"workload": group, "provider": COMPILED, "ms": 4.1, "gb_per_s": 310.0, "fraction_of_copy": 0.10},
        {"workload": "kl_histogram C=20 bins=32 adaptive", "provider": "cuda", "ms": 21.7, "note": "3.95e+11 pairs/s"},
    ]
    print(format_table(rows))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(os.environ.get("OUT") or Path(tempfile.gettempdir()) / "fastral_gpu_check")
    parser.add_argument("--out", type=Path, default=default_out, help="results folder (default: $OUT, else a temp dir)")
    parser.add_argument(
        "--sections",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(SECTIONS),
        help=f"comma-separated, from {','.join(SECTIONS)} (default: all, in that order)",
    )
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all sections together")
    parser.add_argument("--cuda-archs", default=os.environ.get("FASTRAL_CUDA_ARCHS", "90"), help="for the build")
    parser.add_argument("--size", default="gpu", help="benchmark workload size (bench/workloads.py: SIZES)")
    parser.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a self-test of the bench section"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and a sample table; needs no GPU")
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    if args.dry_run:
        return dry_run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
