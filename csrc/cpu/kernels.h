// The CPU kernels' entry points, shared by the kernel sources and bindings.cpp.
//
// Every kernel source (*_cpu.cpp) is compiled once per instruction set, with FASTRAL_ISA naming the namespace its
// symbols go to (fastral::generic, fastral::avx2); bindings.cpp declares each compiled namespace with
// FASTRAL_DECLARE_CPU_KERNELS and picks one at import (simd_exp/simd_log are test hooks of simd_math.h). The argument blocks, status flags and dtype codes are the
// contract both compiled modules share (csrc/contract.h); the CPU kernels take each block with the OpenMP thread
// count added. Arguments are checked in bindings.cpp (check_args): the kernels assume well-formed shapes and
// non-null pointers for every non-empty buffer. Memory is owned by the caller.
#pragma once

#include "../contract.h"

namespace fastral {

// An argument block of the contract, plus the OpenMP threads a CPU kernel runs on.
template <class Args>
struct Cpu : Args {
  Cpu(const Args& args, int threads) : Args(args), nthreads(threads) {}
  int nthreads;
};

#define FASTRAL_DECLARE_CPU_KERNELS(isa)                       \
  namespace isa {                                              \
  int region_stats(const Cpu<RegionStatsArgs>& args);          \
  void kl_histogram(const Cpu<KlHistogramArgs>& args);         \
  int bald_stacked(const Cpu<BaldStackedArgs>& args);          \
  int bald_update(const Cpu<BaldUpdateArgs>& args);            \
  void bald_finalize(const Cpu<BaldFinalizeArgs>& args);       \
  void simd_exp(const float* x, float* out, int64_t n);        \
  void simd_log(const float* x, float* out, int64_t n);        \
  }

}  // namespace fastral
