#!/usr/bin/env python3
"""One-call GPU check of fastral's CUDA backend: build, correctness, compute-sanitizer, benchmarks.

Run it on a GPU machine from the repository root (torch with CUDA installed; no network needed):

    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "$OUT"

Sections, in this order, each in a subprocess with its own time limit inside a global budget (--budget, default
540 s); a section that cannot run (no GPU, no compute-sanitizer, no Triton, no time left) is skipped with the reason:

  build      FASTRAL_STRICT_BUILD=1 FASTRAL_CUDA_ARCHS=90 pip install -e . --no-build-isolation --no-deps
  smoke      every CUDA kernel once on small odd shapes (16-byte and element-load paths, bands of pooling
             windows, the bald fallback for many classes, global histograms for many bins) against the float64
             references computed on the CPU, with poisoned outputs
  parity     FASTRAL_TEST_DEVICE=cuda FASTRAL_REQUIRE_BACKENDS=cuda python -m pytest on the parity, backend,
             interop and build test files present (PARITY_FILES; all of tests/ if none), for triton and cuda
  memcheck   compute-sanitizer --tool memcheck over the smoke driver (torch's caching allocator off)
  bench      device-to-device copy bandwidth, then each workload with every provider: cuda, triton (when its
             kernels import), the eager PyTorch reference and torch.compile(reference); CUDA-event timing, median
             of repeated calls after warm-up, inputs rotated where they would fit in L2
  racecheck  compute-sanitizer --tool racecheck over the smoke driver (shared-memory hazards), if time is left

Writes gpu_check.json (every number) and one .log per section under --out (default $OUT; 7 files), and prints
a short table last. `--sections` picks sections, `--quick` shrinks the benchmark workloads, and `--dry-run`
(no GPU needed) prints the plan and a table of made-up numbers to check the formatting. tests/test_gpu_check.py
runs the two workers on the CPU (every provider on the torch backend, tiny workloads) so this script cannot rot.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("build", "smoke", "parity", "memcheck", "bench", "racecheck")
# Each section's own time limit (seconds); the global budget caps them further.
LIMITS = {"build": 240, "smoke": 90, "parity": 200, "memcheck": 150, "bench": 300, "racecheck": 120}
# The test files the parity section runs (the rest of tests/ does not touch the GPU kernels).
PARITY_FILES = (
    "test_region_stats.py", "test_kl_histogram.py", "test_bald.py", "test_backends.py", "test_interop.py",
    "test_cuda_build.py",
)  # fmt: skip
# Tolerances of the smoke checks (the parity suite's table, tests/_helpers.py).
ENTROPY_TOL, BALD_TOL = 2e-5, 3e-5
# Benchmark workloads: region_stats frames, bald samples (of 2 frames), frame size, kl_histogram (M, N) for the
# full workload (no reference: its M x N matrix does not fit) and for the one the reference can run.
SIZES = {
    "full": {"frames": 8, "samples": 20, "hw": (1024, 2048), "kl": (25_600, 335_000), "kl_ref": (2_560, 25_600)},
    "quick": {"frames": 2, "samples": 5, "hw": (1024, 2048), "kl": (2_560, 33_500), "kl_ref": (2_560, 25_600)},
    "tiny": {"frames": 1, "samples": 2, "hw": (128, 128), "kl": (64, 300), "kl_ref": (32, 100)},  # CPU self-test
}


# ====================================================================== orchestration (no torch import needed)


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


def worker_cmd(worker: str, out: Path, *more: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--out", str(out), *more]


def section_build(out: Path, limit: float) -> dict:
    nvcc = find_cuda_tool("nvcc")
    if nvcc is None:
        (out / "build.log").write_text("nvcc not found on PATH, under CUDA_HOME or /usr/local/cuda: cannot build\n")
        return {"ok": False, "rc": 127, "seconds": 0.0, "log": "build.log", "tail": tail(out / "build.log")}
    cmd = [sys.executable, "-m", "pip", "install", "-e", ".", "--no-build-isolation", "--no-deps", "--no-index"]
    env = child_env(
        FASTRAL_STRICT_BUILD="1", FASTRAL_CUDA_ARCHS=os.environ.get("FASTRAL_CUDA_ARCHS", "90"), CUDACXX=nvcc
    )
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


def section_worker(name: str, out: Path, work: Path, limit: float, quick: bool) -> dict:
    result = run_logged(
        worker_cmd(name, work, *(["--quick"] if quick else [])), out / f"{name}.log", limit, child_env()
    )
    fragment = work / f"{name}.json"
    if fragment.exists():
        result.update(json.loads(fragment.read_text()))
    result["ok"] = result["rc"] == 0 and result.get("ok", True)
    return result


def section_parity(out: Path, limit: float) -> dict:
    if not (ROOT / "tests").is_dir():
        return {"skipped": "no tests/ directory in this checkout"}
    files = [f"tests/{name}" for name in PARITY_FILES if (ROOT / "tests" / name).exists()] or ["tests"]
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "--maxfail=25", "-p", "no:cacheprovider", "-rs"]
    cmd += ["--durations=8"]
    env = child_env(FASTRAL_TEST_DEVICE="cuda", FASTRAL_REQUIRE_BACKENDS="cuda")
    result = run_logged(cmd, out / "parity.log", limit, env)
    summary = [line for line in (out / "parity.log").read_text(errors="replace").splitlines() if " in " in line]
    result["summary"] = summary[-1].strip("= ") if summary else "no pytest summary (see parity.log)"
    result["ok"] = result["rc"] == 0
    return result


def section_sanitizer(tool: str, out: Path, work: Path, limit: float) -> dict:
    sanitizer = find_cuda_tool("compute-sanitizer")
    if sanitizer is None:
        return {"skipped": "compute-sanitizer not found on PATH or under CUDA_HOME"}
    cmd = [
        sanitizer,
        "--tool",
        tool,
        "--error-exitcode",
        "99",
        "--print-limit",
        "30",
        *worker_cmd("smoke", work, "--sanitized"),
    ]
    # Without torch's caching allocator every tensor is its own allocation, so an access past its end is caught.
    result = run_logged(cmd, out / f"{tool}.log", limit, child_env(PYTORCH_NO_CUDA_MEMORY_CACHING="1"))
    text = (out / f"{tool}.log").read_text(errors="replace")
    summary = [line for line in text.splitlines() if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
    result["summary"] = summary[-1].strip() if summary else "no sanitizer summary (see the log)"
    result["ok"] = result["rc"] == 0
    return result


def orchestrate(args) -> int:
    out = args.out
    work = Path(tempfile.mkdtemp(prefix="fastral_gpu_check_"))  # workers' JSON: $OUT returns at most 8 files
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
        elif name != "build" and not report["env"].get("cuda_device"):
            result = {"skipped": f"no CUDA device visible to torch ({report['env'].get('cuda_error', '')})"}
        elif name == "build":
            result = section_build(out, limit)
            built = result["ok"]
        elif name == "parity":
            result = section_parity(out, limit)
        elif name in ("memcheck", "racecheck"):
            result = section_sanitizer(name, out, work, limit)
        else:
            result = section_worker(name, out, work, limit, args.quick)
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
    for row in result.get("cases", []):
        if not row["ok"]:
            print(f"[{name}] FAILED {row['case']}: {row.get('error') or row}", flush=True)
    if not result.get("ok"):
        print("    " + result.get("tail", "").replace("\n", "\n    "), flush=True)


def print_summary(report: dict) -> None:
    print("\n==== fastral gpu_check summary ====")
    env = report["env"]
    print(f"device: {env.get('cuda_device', 'none')}  torch {env.get('torch')}  triton {env.get('triton')}")
    for name, result in report["sections"].items():
        state = "skipped: " + result["skipped"] if "skipped" in result else ("ok" if result.get("ok") else "FAILED")
        extra = result.get("summary") or ""
        if name == "smoke" and "cases" in result:
            extra = f"{sum(r['ok'] for r in result['cases'])}/{len(result['cases'])} cases within tolerance"
        print(f"  {name:<10} {state}  {extra}")
    bench = report["sections"].get("bench", {})
    if bench.get("rows"):
        print(f"\ncopy bandwidth (read + write): {bench['copy_gb_per_s']:.0f} GB/s")
        print(format_table(bench["rows"]))


def format_table(rows: list[dict]) -> str:
    """The benchmark table: one line per (workload, provider)."""
    compiled = {r["workload"]: r["ms"] for r in rows if r["provider"] == "compiled" and r.get("ms")}
    header = f"{'workload':<44} {'provider':<10} {'median ms':>10} {'GB/s':>8} {'% copy':>7} {'vs compile':>10}  note"
    lines = [header, "-" * len(header)]
    for r in rows:
        ms = r.get("ms")
        if ms is None:
            lines.append(
                f"{r['workload']:<44} {r['provider']:<10} {'-':>10} {'-':>8} {'-':>7} {'-':>10}  {r.get('note', '')}"
            )
            continue
        gbs = f"{r['gb_per_s']:.0f}" if r.get("gb_per_s") else "-"
        frac = f"{100 * r['fraction_of_copy']:.0f}%" if r.get("fraction_of_copy") else "-"
        ref = compiled.get(r["workload"])
        speed = f"{ref / ms:.1f}x" if ref else "-"
        lines.append(
            f"{r['workload']:<44} {r['provider']:<10} {ms:>10.3f} {gbs:>8} {frac:>7} {speed:>10}  {r.get('note', '')}"
        )
    return "\n".join(lines)


def dry_run(args) -> int:
    print("plan (nothing runs):")
    for name in args.sections:
        print(f"  {name:<10} limit {LIMITS[name]} s")
    sanitizer = find_cuda_tool("compute-sanitizer") or "not found"
    print(f"  output: {args.out}/gpu_check.json and one .log per section; compute-sanitizer: {sanitizer}")
    rows = [
        {
            "workload": "region_stats 8x19x1024x2048 f32",
            "provider": "cuda",
            "ms": 0.52,
            "gb_per_s": 2446.0,
            "fraction_of_copy": 0.82,
            "note": "counts exact, max |d entropy| 1.2e-06",
        },
        {
            "workload": "region_stats 8x19x1024x2048 f32",
            "provider": "triton",
            "ms": None,
            "note": "unavailable: backend 'triton' is unavailable for region_stats",
        },
        {
            "workload": "region_stats 8x19x1024x2048 f32",
            "provider": "compiled",
            "ms": 4.1,
            "gb_per_s": 310.0,
            "fraction_of_copy": 0.10,
        },
        {
            "workload": "kl_histogram 25600x335000 C=20 bins=32",
            "provider": "cuda",
            "ms": 21.7,
            "note": "3.95e+11 pairs/s",
        },
    ]
    print(format_table(rows))
    return 0


# ====================================================================== workers (run on the GPU machine)


def max_abs(a, b) -> float:
    import torch

    return (
        float((torch.as_tensor(a).cpu().double() - torch.as_tensor(b).cpu().double()).abs().max()) if b.numel() else 0.0
    )


def worker_smoke(args) -> dict:
    """Each CUDA kernel once on small odd shapes, checked against float64 references on the CPU."""
    import torch

    import fastral
    from fastral.ops import _common

    _common.POISON_OUTPUTS = True  # an output element a kernel forgot to write shows up as NaN / INT32_MIN
    dev, cuda = device_and_backend(args)
    g = torch.Generator().manual_seed(0)
    cases: list[dict] = []

    def case(name, fn):
        try:
            row = {"case": name, **fn()}
        except Exception as exc:
            row = {"case": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        cases.append(row)
        print(("ok   " if row["ok"] else "FAIL ") + json.dumps(row), flush=True)

    def scores(shape, logits, dtype, class_dim=1):
        if logits:
            x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
        else:
            x = torch.rand(shape, generator=g, dtype=torch.float64) * 2
            x = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < 0.3, 0.0, x)
            x = x + 1e-3 * (torch.arange(shape[class_dim]) == 0).reshape([-1] + [1] * (len(shape) - class_dim - 1))
        return x.to(dtype)

    def region(shape, reg, pool, logits, dtype, masked):
        x = scores(shape, logits, dtype)
        B, _, H, W = shape
        mask = torch.rand(B, H, W, generator=g) < 0.2 if masked else None
        out = fastral.region_stats(x.to(dev), reg, pool, logits, None if mask is None else mask.to(dev), backend=cuda)
        ref = fastral.reference_region_stats(x.double(), reg, pool, logits, mask)
        counts_equal = bool(torch.equal(out.counts.cpu().long(), ref.counts))
        err = max(max_abs(out.entropy_pool, ref.entropy_pool), max_abs(out.entropy_mean, ref.entropy_mean))
        tol = ENTROPY_TOL * (1 + float(ref.entropy_pool.abs().max()))
        return {"ok": counts_equal and err <= tol, "counts_equal": counts_equal, "max_err": err}

    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    case(
        "region_stats f32 logits 2x19x37x53 (16,15)/(3,4) mask, element loads",
        lambda: region((2, 19, 37, 53), (16, 15), (3, 4), True, f32, True),
    )
    case(
        "region_stats f16 probs 1x11x36x48 (9,16)/(3,3), 16-byte loads",
        lambda: region((1, 11, 36, 48), (9, 16), (3, 3), False, f16, False),
    )
    case(
        "region_stats bf16 logits 2x7x32x64 (16,32)/(4,4) mask, 16-byte loads",
        lambda: region((2, 7, 32, 64), (16, 32), (4, 4), True, bf16, True),
    )
    case(
        "region_stats f32 logits 3x1x7x9 (1,1)/(1,1), C=1",
        lambda: region((3, 1, 7, 9), (1, 1), (1, 1), True, f32, False),
    )
    case(
        "region_stats f32 logits 1x3x64x128 (64,64)/(64,64), window bands",
        lambda: region((1, 3, 64, 128), (64, 64), (64, 64), True, f32, True),
    )

    def region_flags():
        x = torch.randn(1, 3, 8, 8)
        x[0, 1, 2, 3] = float("nan")
        try:
            fastral.region_stats(x.to(dev), (4, 4), (2, 2), backend=cuda)
        except ValueError as exc:
            return {"ok": "NaN" in str(exc)}
        return {"ok": False, "error": "no ValueError for a NaN score"}

    case("region_stats NaN score raises", region_flags)

    def kl(M, N, C, bins, rng_, exclude_self):
        p = torch.rand(M, C, generator=g) * 100
        p = torch.where(torch.rand(M, C, generator=g) < 0.3, 0.0, p)
        q = (
            p.clone()
            if exclude_self
            else torch.where(torch.rand(N, C, generator=g) < 0.3, 0.0, torch.rand(N, C, generator=g))
        )
        out = fastral.kl_histogram(p.to(dev), q.to(dev), bins, rng_, exclude_self, backend=cuda).cpu().double()
        ref = fastral.reference_kl_histogram(p.double(), q.double(), bins, rng_, exclude_self)
        n = N - 1 if exclude_self else N
        moved = float((out - ref).abs().sum()) * max(n, 1) / 2  # values binned differently (rounding at an edge)
        return {"ok": moved <= max(2.0, 0.02 * M * n) and not torch.isnan(out).any(), "values_moved": moved}

    case("kl_histogram 37x53 C=11 bins=32 adaptive", lambda: kl(37, 53, 11, 32, None, False))
    case("kl_histogram 64x64 C=20 exclude_self", lambda: kl(64, 64, 20, 32, None, True))
    case("kl_histogram 40x97 C=19 bins=7 range (0, 2)", lambda: kl(40, 97, 19, 7, (0.0, 2.0), False))
    case("kl_histogram 10x300 C=5 bins=3000, global histograms", lambda: kl(10, 300, 5, 3000, None, False))
    case("kl_histogram 5x7 C=1, middle bin", lambda: kl(5, 7, 1, 5, None, False))

    def bald(shape, logits, dtype, streaming=False):
        x = scores(shape, logits, dtype, class_dim=2)
        if streaming:
            acc = fastral.BaldAccumulator(from_logits=logits, backend=cuda)
            for sample in x:
                acc.update(sample.to(dev))
            out = acc.compute()
        else:
            out = fastral.bald(x.to(dev), from_logits=logits, backend=cuda)
        ref_bald, ref_entropy = fastral.reference_bald(x.double(), logits)
        e_bald, e_ent = max_abs(out.bald, ref_bald), max_abs(out.entropy, ref_entropy)
        ok = e_bald <= BALD_TOL and e_ent <= ENTROPY_TOL * (1 + float(ref_entropy.abs().max()))
        return {"ok": ok, "max_err_bald": e_bald, "max_err_entropy": e_ent}

    case("bald stacked f32 logits 3x2x5x9x11, element loads", lambda: bald((3, 2, 5, 9, 11), True, f32))
    case("bald stacked f16 logits 4x1x19x16x32, 16-byte copies", lambda: bald((4, 1, 19, 16, 32), True, f16))
    case("bald stacked bf16 probs 3x2x6x8x8", lambda: bald((3, 2, 6, 8, 8), False, bf16))
    case("bald stacked f16 logits 2x1x300x4x8, many-class fallback", lambda: bald((2, 1, 300, 4, 8), True, f16))
    case("bald streaming f32 logits 5x2x19x12x20", lambda: bald((5, 2, 19, 12, 20), True, f32, streaming=True))
    case("bald streaming f32 probs 3x1x7x5x7, element loads", lambda: bald((3, 1, 7, 5, 7), False, f32, streaming=True))
    synchronize(dev)
    return {"ok": all(c["ok"] for c in cases), "cases": cases}


def device_and_backend(args):
    """The device the workers run on and the backend they test: cuda, or (CPU self-test) torch on the CPU."""
    import torch

    dev = torch.device(args.device)
    return dev, "cuda" if dev.type == "cuda" else "torch"


def synchronize(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def elapsed_ms(fn, dev) -> float:
    """One call of fn: CUDA events around it on the GPU, the wall clock elsewhere."""
    import torch

    if dev.type != "cuda":
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def timed(fn, dev, max_reps: int = 20, budget_s: float = 2.0) -> dict:
    """Median and min milliseconds of fn(), after a warm-up call (compilation, caches) and two more on the GPU."""
    for _ in range(3 if dev.type == "cuda" else 1):
        fn()
    synchronize(dev)
    one = elapsed_ms(fn, dev)
    reps = max(3, min(max_reps, int(budget_s * 1000 / max(one, 1e-3)))) if dev.type == "cuda" else 3
    times = [elapsed_ms(fn, dev) for _ in range(reps)]
    return {"ms": statistics.median(times), "min_ms": min(times), "reps": reps}


def copy_bandwidth(dev) -> float:
    """Device-to-device copy of 1 GiB (4 MiB on the CPU), counting bytes read plus written (GB/s)."""
    import torch

    src = torch.randn(2**28 if dev.type == "cuda" else 2**20, device=dev)  # random: never time on zeros
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), dev, max_reps=30)
    return 2 * src.numel() * 4 / (t["ms"] / 1e3) / 1e9


class Bench:
    """Times providers of one workload after another and collects the table's rows."""

    def __init__(self, args):
        import torch

        self.out = args.out / "bench.json"  # rewritten after every row: a timeout keeps what was measured
        self.dev, self.cuda = device_and_backend(args)
        on_gpu = self.dev.type == "cuda"
        self.size = SIZES["tiny" if not on_gpu else "quick" if args.quick else "full"]
        # Providers of the fast backends; on the CPU (self-test of this script) both run the torch backend.
        self.backends = {"cuda": self.cuda, "triton": "triton" if on_gpu else "torch"}
        self.copy_gb_per_s = copy_bandwidth(self.dev)
        self.rows: list[dict] = []
        # torch.compile costs ~20 s per op on the CPU, where it is not what is measured: eager there.
        self.compile = (lambda fn: torch.compile(fn, dynamic=False)) if on_gpu else (lambda fn: fn)

    def row(self, workload, provider, fn, inputs, in_bytes=None, work=None, check=None):
        """Time fn over the rotated inputs; check(fn(inputs[0])) compares one result with a reference."""
        row = {"workload": workload, "provider": provider}
        try:
            cycle = itertools.cycle(inputs)
            row.update(timed(lambda: fn(next(cycle)), self.dev))
            if in_bytes:
                row["gb_per_s"] = in_bytes / (row["ms"] / 1e3) / 1e9
                row["fraction_of_copy"] = row["gb_per_s"] / self.copy_gb_per_s
            if work:
                unit, count = work
                row["note"] = f"{count / (row['ms'] / 1e3):.3g} {unit}/s"
            if check:
                row["check"] = check(fn(inputs[0]))
                row["note"] = (row.get("note", "") + " " + row["check"]["text"]).strip()
        except Exception as exc:  # an unavailable backend, an OOM, a compile failure: recorded, not fatal
            row["ms"] = None
            row["note"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
        self.add(row)
        empty_cache(self.dev)
        return row

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.out.write_text(json.dumps(self.result(), indent=1))

    def result(self) -> dict:
        return {"copy_gb_per_s": self.copy_gb_per_s, "rows": self.rows}


def bench_region_stats(b: Bench) -> None:
    """Cityscapes frames, 128x128 regions, 8x8 pooling."""
    import torch

    import fastral
    from fastral import reference_region_stats

    (H, W), frames = b.size["hw"], b.size["frames"]
    x = torch.randn(frames, 19, H, W, device=b.dev) * 3
    name, reg, pool, nbytes = f"region_stats {frames}x19x{H}x{W} f32", (128, 128), (8, 8), x.numel() * 4
    ref = reference_region_stats(x, reg, pool)

    def check(out):
        equal = bool(torch.equal(out.counts.long(), ref.counts))
        err = max(max_abs(out.entropy_pool, ref.entropy_pool), max_abs(out.entropy_mean, ref.entropy_mean))
        text = f"counts {'exact' if equal else 'DIFFER'}, max|d| {err:.1e}"
        return {"counts_equal": equal, "max_err": err, "text": text}

    for provider, backend in b.backends.items():
        run = lambda t, backend=backend: fastral.region_stats(t, reg, pool, backend=backend)  # noqa: E731
        b.row(name, provider, run, [x], nbytes, check=check)
    b.row(name, "reference", lambda t: reference_region_stats(t, reg, pool), [x], nbytes)
    compiled = b.compile(reference_region_stats)
    b.row(name, "compiled", lambda t: compiled(t, reg, pool), [x], nbytes)


def bench_bald(b: Bench) -> None:
    """T MC-dropout samples of 2 frames: stacked, streamed, and the references."""
    import torch

    import fastral
    from fastral import reference_bald

    (H, W), samples = b.size["hw"], b.size["samples"]
    x = torch.randn(samples, 2, 19, H, W, device=b.dev) * 3
    name, nbytes = f"bald {samples}x2x19x{H}x{W} f32", x.numel() * 4
    ref_bald, _ = reference_bald(x)

    def check(out):
        err = max_abs(out.bald, ref_bald)
        return {"max_err": err, "text": f"max|d bald| {err:.1e}"}

    def streamed(t):
        acc = fastral.BaldAccumulator(backend=b.cuda)
        for sample in t:
            acc.update(sample)
        return acc.compute()

    for provider, backend in b.backends.items():
        b.row(name, provider, lambda t, backend=backend: fastral.bald(t, backend=backend), [x], nbytes, check=check)
    b.row(name, "cuda-stream", streamed, [x], nbytes, check=check)
    b.row(name, "reference", reference_bald, [x], nbytes)
    b.row(name, "compiled", b.compile(reference_bald), [x], nbytes)


def distributions(rows: int, seed: int, dev):
    """Sparse count-like class distributions (C = 20), generated on the device."""
    import torch

    gen = torch.Generator(device=dev).manual_seed(seed)
    d = torch.rand(rows, 20, generator=gen, device=dev) * 1000
    return torch.where(torch.rand(rows, 20, generator=gen, device=dev) < 0.5, 0.0, d)


def bench_kl_full(b: Bench) -> None:
    """Candidates against a large pool, 32 adaptive bins: no reference (its M x N matrix does not fit)."""
    import fastral

    M, N = b.size["kl"]
    name = f"kl_histogram {M}x{N} C=20 bins=32"
    sets = [(distributions(M, 2 * s, b.dev), distributions(N, 2 * s + 1, b.dev)) for s in range(3)]  # 3 x 29 MB > L2
    base = {}

    def keep_as_base(out):
        base["out"] = out
        return {"text": ""}

    def agree_with_cuda(out):  # without a reference, the two fast backends are compared
        if "out" not in base:
            return {"text": "no cuda result to compare with"}
        moved = float((out - base["out"]).abs().sum()) * N / 2
        return {"values_moved": moved, "text": f"{moved:.0f} of {M * N} values binned differently from cuda"}

    for provider, check in (("cuda", keep_as_base), ("triton", agree_with_cuda)):
        run = lambda pq, backend=b.backends[provider]: fastral.kl_histogram(*pq, 32, backend=backend)  # noqa: E731
        b.row(name, provider, run, sets, work=("pairs", M * N), check=check)
    note = f"skipped: needs the {M}x{N} KL matrix ({M * N * 4 / 1e9:.0f} GB) and its int64 bin indices"
    b.add({"workload": name, "provider": "reference", "ms": None, "note": note})


def bench_kl_reference_size(b: Bench) -> None:
    """A pool small enough for the reference's M x N matrix, to compare against it and torch.compile."""
    import fastral
    from fastral import reference_kl_histogram

    m, n = b.size["kl_ref"]
    name = f"kl_histogram {m}x{n} C=20 bins=32"
    sets = [(distributions(m, 10 + 2 * s, b.dev), distributions(n, 11 + 2 * s, b.dev)) for s in range(3)]
    ref = reference_kl_histogram(*sets[0], 32)

    def check(out):
        moved = float((out.double() - ref.double()).abs().sum()) * n / 2
        return {"values_moved": moved, "text": f"{moved:.0f} of {m * n} values binned differently from the reference"}

    for provider, backend in b.backends.items():
        run = lambda pq, backend=backend: fastral.kl_histogram(*pq, 32, backend=backend)  # noqa: E731
        b.row(name, provider, run, sets, work=("pairs", m * n), check=check)
    b.row(name, "reference", lambda pq: reference_kl_histogram(*pq, 32), sets, work=("pairs", m * n))
    compiled = b.compile(reference_kl_histogram)
    b.row(name, "compiled", lambda pq: compiled(*pq, 32), sets, work=("pairs", m * n))


def worker_bench(args) -> dict:
    b = Bench(args)
    for workload in (bench_region_stats, bench_bald, bench_kl_full, bench_kl_reference_size):
        workload(b)
        empty_cache(b.dev)
    return b.result()


def empty_cache(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.empty_cache()


WORKERS = {"smoke": worker_smoke, "bench": worker_bench}


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
    parser.add_argument("--quick", action="store_true", help="smaller benchmark workloads")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and a sample table; needs no GPU")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--sanitized", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: self-test of the workers
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    if args.dry_run:
        return dry_run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = WORKERS[args.worker](args)
        if not args.sanitized:  # under a sanitizer the orchestrator reads the log, not a fragment
            (args.out / f"{args.worker}.json").write_text(json.dumps(result, indent=1))
        return 0 if result.get("ok", True) else 1
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
