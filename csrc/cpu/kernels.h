// The CPU kernels' entry points and argument blocks, shared by the kernel sources and bindings.cpp.
//
// Every kernel source (*_cpu.cpp) is compiled once per instruction set, with FASTRAL_ISA naming the namespace its
// symbols go to (fastral::generic, fastral::avx2); bindings.cpp declares each compiled namespace with
// FASTRAL_DECLARE_CPU_KERNELS and picks one at import. Arguments are validated in bindings.cpp: the kernels
// assume well-formed shapes and non-null pointers for every non-empty buffer. Memory is owned by the caller.
#pragma once

#include <cstdint>

namespace fastral {

// Status bits the score-reading kernels return; must match FLAG_* in fastral/ops/_common.py.
enum : int {
  kFlagNonFinite = 1,  // a NaN or +-inf score among the pixels read
  kFlagNegative = 2,   // a negative probability (from_logits = false)
  kFlagSumRange = 4,   // a pixel whose probabilities sum to 0 or outside [FLT_MIN, FLT_MAX] (from_logits = false)
};

// Element types of the scores; must match DTYPE_CODES in fastral/ops/_common.py.
enum class Dtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct RegionStatsArgs {
  const void* x;         // [B, C, H, W] scores of type dtype
  Dtype dtype;
  int64_t B, C, H, W;
  const uint8_t* mask;   // [B, H, W], nonzero = ignored pixel; may be null
  int64_t rh, rw;        // region size
  int64_t ph, pw;        // pooling cells per region
  bool from_logits;
  int32_t* counts;       // [R, C]
  float* pool;           // [R, 3, ph, pw]: min, mean, max
  float* mean;           // [R]
  int nthreads;
};

struct KlHistogramArgs {
  const float* p;  // [M, C]
  int64_t M;
  const float* q;  // [N, C]
  int64_t N, C, bins;
  bool adaptive;   // per-row range [min_j, max_j]; else [lo, hi]
  double lo, hi;
  bool exclude_self;
  double eps;
  float* out;      // [M, bins]
  int nthreads;
};

struct BaldStackedArgs {
  const void* x;  // [T, B, C, H, W] scores of type dtype, or [B, C, H, W, T] when sample_last
  Dtype dtype;
  int64_t T, B, C, H, W;
  bool sample_last;  // baal's layout: the T samples of a score are adjacent
  bool from_logits;
  float* bald;     // [B, H, W]
  float* entropy;  // [B, H, W]
  int nthreads;
};

struct BaldUpdateArgs {
  const void* x;  // T samples to add, laid out as in BaldStackedArgs ([B, C, H, W] for T = 1)
  Dtype dtype;
  int64_t T, B, C, H, W;
  bool sample_last;
  bool from_logits;
  bool first;      // write the sums instead of adding to them
  float* sum_p;    // [B, C, H, W]
  float* sum_h;    // [B, H, W]
  int nthreads;
};

struct BaldFinalizeArgs {
  const float* sum_p;  // [B, C, H, W]
  const float* sum_h;  // [B, H, W]
  int64_t T, B, C, H, W;
  float* bald;         // [B, H, W]
  float* entropy;      // [B, H, W]
  int nthreads;
};

#define FASTRAL_DECLARE_CPU_KERNELS(isa)                  \
  namespace isa {                                         \
  int region_stats(const RegionStatsArgs& args);          \
  void kl_histogram(const KlHistogramArgs& args);         \
  int bald_stacked(const BaldStackedArgs& args);          \
  int bald_update(const BaldUpdateArgs& args);            \
  void bald_finalize(const BaldFinalizeArgs& args);       \
  }

}  // namespace fastral
