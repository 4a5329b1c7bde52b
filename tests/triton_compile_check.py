"""Compile fastral's Triton kernels for an NVIDIA GPU without one (Triton ships ptxas) and report registers and
spills per kernel, for the tuned shapes (Cityscapes: C = 19, 128 x 128 regions, 8 x 8 pooling; KL with C <= 32).

Catches GPU-only compile errors on CPU machines, where the interpreter runs the kernels without compiling
them, and register spills (the kernel headers promise none at these shapes). Exits 1 on either.

    python tests/triton_compile_check.py [--arch 90]

Run it without TRITON_INTERPRET (the interpreter replaces @triton.jit kernels); tests/test_triton_kernels.py
runs it in a subprocess.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import triton
from fastral.kernels import bald, kl_histogram, region_stats
from triton.backends.compiler import GPUTarget

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
POINTER_TYPES = {"ignore_ptr": "*u8", "counts_ptr": "*i32", "flags_ptr": "*i32"}  # others: float32, x_ptr: scores
# Integer arguments that are multiples of 16 at the tuned shapes (Triton specialises on that when launching).
ALIGNED_SIZES = {"H", "W", "RH", "RW", "KH", "KW", "HW", "SPLIT_N"}


def configs():
    """(label, kernel, scores dtype, constexprs, num_warps) of each kernel at its tuned shape."""
    rs = dict(C=19, HAS_MASK=True, BLOCK_C=32, NUM_LABELS=32, BLOCK_KH=4, BLOCK_NJ=8, BLOCK_KW=16)
    rs["VEC"] = region_stats.PIXELS_PER_THREAD
    for dtype, logits in (("fp32", True), ("fp32", False), ("bf16", True)):
        label = f"region_stats {dtype} logits={logits}"
        yield label, region_stats._region_stats_kernel, dtype, {**rs, "FROM_LOGITS": logits}, region_stats.NUM_WARPS
    pixels = dict(C=19, BLOCK_C=32, BLOCK_P=bald.BLOCK_P, VEC=bald.VEC)
    for dtype, logits, last in (("fp32", True, False), ("bf16", False, False), ("fp32", True, True)):
        label = f"bald_stacked {dtype} logits={logits} sample_last={last}"
        stacked = {**pixels, "FROM_LOGITS": logits, "SAMPLE_LAST": last}
        yield label, bald._bald_stacked_kernel, dtype, stacked, bald.NUM_WARPS
    update = {**pixels, "FROM_LOGITS": True, "FIRST": False, "SAMPLE_LAST": False}
    yield "bald_update fp32", bald._bald_update_kernel, "fp32", update, bald.NUM_WARPS
    yield "bald_finalize", bald._bald_finalize_kernel, "fp32", pixels, bald.NUM_WARPS
    kl = dict(KP=32, EXCLUDE_SELF=True, BLOCK_M=kl_histogram.BLOCK_M, BLOCK_N=kl_histogram.BLOCK_N)
    yield "kl_range", kl_histogram._kl_range_kernel, "fp32", kl, kl_histogram.NUM_WARPS
    histogram = {**kl, "BLOCK_BINS": 32}
    yield "kl_histogram", kl_histogram._kl_histogram_kernel, "fp32", histogram, kl_histogram.NUM_WARPS


def resource_usage(kernel, dtype: str, constexprs: dict, num_warps: int, arch: int) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of ``kernel`` compiled for sm_<arch>."""
    signature, aligned = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if name == "x_ptr":
            signature[name] = f"*{dtype}"
        elif name.endswith("_ptr"):
            signature[name] = POINTER_TYPES.get(name, "*fp32")
        else:
            signature[name] = "i32"
        if name.endswith("_ptr") or name in ALIGNED_SIZES:
            aligned[(i,)] = [["tt.divisibility", 16]]
    source = triton.compiler.ASTSource(kernel, signature, constexprs, aligned)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([CUOBJDUMP, "-res-usage", cubin.name], check=True, capture_output=True, text=True)
    line = next(line for line in usage.stdout.splitlines() if "REG:" in line)
    fields = dict(item.split(":", 1) for item in line.split() if ":" in item)
    return int(fields["REG"]), int(fields["STACK"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80 or 90")
    arch = parser.parse_args().arch
    failed = False
    for label, kernel, dtype, constexprs, num_warps in configs():
        registers, stack = resource_usage(kernel, dtype, constexprs, num_warps, arch)
        failed |= stack > 0
        print(f"{label:32s} sm_{arch}: {registers:3d} registers, {stack:3d} B stack{'  <- spills' if stack else ''}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
