// The host-side contract of fastral's two compiled modules, fastral._C (csrc/cpu) and fastral._C_cuda (csrc/cuda):
// status flags, dtype codes, one argument block per kernel and the checks every argument block passes before a
// kernel runs. Both modules include this one header, so they accept and refuse the same calls (an empty batch is
// a no-op on both); each adds only what its device needs (the CPU module a thread count, the CUDA module a stream,
// scratch memory and, for its vector loads, aligned addresses). Plain C++17: nvcc and the host compiler both read
// it. Python's side is fastral/ops/_common.py (FLAG_*, DTYPE_CODES; both modules export these constants and a test
// compares them) and fastral/ops/_compiled.py (the argument tuples, in the order of the FASTRAL_*_ARGS lists).
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace fastral {

// Status bits the score-reading kernels return.
enum : int {
  kFlagNonFinite = 1,  // a NaN or +-inf score among the pixels read
  kFlagNegative = 2,   // a negative probability (from_logits = false)
  kFlagSumRange = 4,   // a pixel whose probabilities sum to 0 or outside [FLT_MIN, FLT_MAX] (from_logits = false)
};

// Element types of the scores.
enum class Dtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
constexpr const char* kDtypeNames[] = {"float32", "float16", "bfloat16"};  // indexed by Dtype
constexpr int kDtypeCount = 3;
constexpr int dtype_size(Dtype d) { return d == Dtype::kFloat32 ? 4 : 2; }

// The argument blocks. Each FASTRAL_<KERNEL>_ARGS(X) lists the fields in the order Python passes them
// (fastral/ops/_compiled.py); the struct below is declared from that list, and the bindings read a Python tuple
// into it with the same list, so a field is named once on the C++ side. Arrays are C-contiguous; R is the number
// of regions B * (H / rh) * (W / rw).

// region_stats: x [B, C, H, W] scores of type dtype; mask [B, H, W] uint8, nonzero = ignored (may be null);
// counts int32 [R, C]; pool float32 [R, 3, ph, pw] (min, mean, max); mean float32 [R].
#define FASTRAL_REGION_STATS_ARGS(X)                                                                           \
  X(const void*, x) X(Dtype, dtype) X(int64_t, B) X(int64_t, C) X(int64_t, H) X(int64_t, W)                \
  X(const uint8_t*, mask) X(int64_t, rh) X(int64_t, rw) X(int64_t, ph) X(int64_t, pw) X(bool, from_logits) \
  X(int32_t*, counts) X(float*, pool) X(float*, mean)

// kl_histogram: p float32 [M, C], q float32 [N, C], out float32 [M, bins]; adaptive: each row's range is
// [min_j, max_j] (lo, hi unused), else [lo, hi].
#define FASTRAL_KL_HISTOGRAM_ARGS(X)                                                                  \
  X(const float*, p) X(int64_t, M) X(const float*, q) X(int64_t, N) X(int64_t, C) X(int64_t, bins) \
  X(bool, adaptive) X(double, lo) X(double, hi) X(bool, exclude_self) X(double, eps) X(float*, out)

// bald_stacked: x [T, B, C, H, W] scores of type dtype, or baal's [B, C, H, W, T] when sample_last (the T samples
// of a score adjacent); bald, entropy float32 [B, H, W].
#define FASTRAL_BALD_STACKED_ARGS(X)                                                                       \
  X(const void*, x) X(Dtype, dtype) X(int64_t, T) X(int64_t, B) X(int64_t, C) X(int64_t, H) X(int64_t, W) \
  X(bool, sample_last) X(bool, from_logits) X(float*, bald) X(float*, entropy)

// bald_update: T samples x laid out as for bald_stacked, added to sum_p float32 [B, C, H, W] and sum_h float32
// [B, H, W] (written instead when first).
#define FASTRAL_BALD_UPDATE_ARGS(X)                                                                        \
  X(const void*, x) X(Dtype, dtype) X(int64_t, T) X(int64_t, B) X(int64_t, C) X(int64_t, H) X(int64_t, W) \
  X(bool, sample_last) X(bool, from_logits) X(bool, first) X(float*, sum_p) X(float*, sum_h)

// bald_finalize: entropy = H[sum_p / T] (0 log 0 = 0) and bald = entropy - sum_h / T, float32 [B, H, W].
#define FASTRAL_BALD_FINALIZE_ARGS(X)                                                                           \
  X(const float*, sum_p) X(const float*, sum_h) X(int64_t, T) X(int64_t, B) X(int64_t, C) X(int64_t, H)      \
  X(int64_t, W) X(float*, bald) X(float*, entropy)

#define FASTRAL_FIELD(type, name) type name;
struct RegionStatsArgs { FASTRAL_REGION_STATS_ARGS(FASTRAL_FIELD) };
struct KlHistogramArgs { FASTRAL_KL_HISTOGRAM_ARGS(FASTRAL_FIELD) };
struct BaldStackedArgs { FASTRAL_BALD_STACKED_ARGS(FASTRAL_FIELD) };
struct BaldUpdateArgs { FASTRAL_BALD_UPDATE_ARGS(FASTRAL_FIELD) };
struct BaldFinalizeArgs { FASTRAL_BALD_FINALIZE_ARGS(FASTRAL_FIELD) };
#undef FASTRAL_FIELD

// ------------------------------------------------------------------------------------------------- checks
// The Python layer validates every argument and owns all memory; these checks are the second line of defence, so
// that a bad call raises ValueError (std::invalid_argument) naming "<module>.<kernel>" instead of corrupting memory.

struct Check {
  const char* module;  // "fastral._C" or "fastral._C_cuda"
  const char* kernel;

  void operator()(bool ok, const std::string& what) const {
    if (!ok) throw std::invalid_argument(std::string(module) + "." + kernel + ": " + what);
  }

  // Product of non-negative sizes; refuses a negative size or an int64 overflow.
  int64_t numel(std::initializer_list<int64_t> dims) const {
    int64_t n = 1;
    for (int64_t d : dims) {
      (*this)(d >= 0, "sizes must be non-negative, got " + std::to_string(d));
      (*this)(!__builtin_mul_overflow(n, d, &n), "the buffer size overflows int64");
    }
    return n;
  }

  // An array of count elements: it may be null only when empty.
  void array(const void* address, int64_t count, const char* name) const {
    (*this)(count == 0 || address != nullptr, std::string("argument '") + name + "' is a null pointer");
  }

  void dtype(Dtype d) const {
    const int code = static_cast<int>(d);
    (*this)(code >= 0 && code < kDtypeCount,
            "unknown dtype code " + std::to_string(code) + " (0 float32, 1 float16, 2 bfloat16)");
  }
};

// Each check_args returns the number of output elements the call writes; 0 means there is nothing to do, and the
// bindings return without running a kernel (nor touching a device).

inline int64_t check_args(const Check& c, const RegionStatsArgs& a) {
  c.dtype(a.dtype);
  const int64_t n = c.numel({a.B, a.C, a.H, a.W});
  c(a.C >= 1 && a.H >= 1 && a.W >= 1, "C, H and W must be >= 1");
  c(a.rh >= 1 && a.rh <= a.H && a.rw >= 1 && a.rw <= a.W,
    "the region must fit in the image: (" + std::to_string(a.rh) + ", " + std::to_string(a.rw) +
        ") is empty or larger than " + std::to_string(a.H) + "x" + std::to_string(a.W));
  c(a.ph >= 1 && a.ph <= a.rh && a.pw >= 1 && a.pw <= a.rw,
    "the pool must be >= 1 and have no more cells than the region has pixels, got (" + std::to_string(a.ph) +
        ", " + std::to_string(a.pw) + ")");
  const int64_t R = c.numel({a.B, a.H / a.rh, a.W / a.rw});
  c.array(a.x, n, "x");
  c.array(a.counts, c.numel({R, a.C}), "counts");
  c.array(a.pool, c.numel({R, 3, a.ph, a.pw}), "pool");
  c.array(a.mean, R, "mean");
  return R;
}

inline int64_t check_args(const Check& c, const KlHistogramArgs& a) {
  c(a.C >= 1, "C must be >= 1");
  c(a.bins >= 1, "bins must be >= 1");
  c(a.adaptive || (std::isfinite(a.lo) && std::isfinite(a.hi) && a.lo < a.hi), "a fixed range must be finite with lo < hi");
  c(std::isfinite(a.eps) && a.eps > 0, "eps must be positive and finite");
  c(!a.exclude_self || a.M == a.N, "exclude_self needs M == N");
  c(a.M < INT32_MAX && a.N < INT32_MAX, "M and N must be below 2^31");
  c.array(a.p, c.numel({a.M, a.C}), "p");
  c.array(a.q, c.numel({a.N, a.C}), "q");
  const int64_t out = c.numel({a.M, a.bins});
  c.array(a.out, out, "out");
  return out;  // with N = 0 (nothing to compare against) every histogram is 0
}

inline int64_t check_args(const Check& c, const BaldStackedArgs& a) {
  c.dtype(a.dtype);
  c(a.T >= 1 && a.C >= 1, "T and C must be >= 1");
  c.array(a.x, c.numel({a.T, a.B, a.C, a.H, a.W}), "x");
  const int64_t pixels = c.numel({a.B, a.H, a.W});
  c.array(a.bald, pixels, "bald");
  c.array(a.entropy, pixels, "entropy");
  return pixels;
}

inline int64_t check_args(const Check& c, const BaldUpdateArgs& a) {
  c.dtype(a.dtype);
  c(a.T >= 1 && a.C >= 1, "T and C must be >= 1");
  c.array(a.x, c.numel({a.T, a.B, a.C, a.H, a.W}), "x");
  const int64_t n = c.numel({a.B, a.C, a.H, a.W});
  c.array(a.sum_p, n, "sum_p");
  c.array(a.sum_h, c.numel({a.B, a.H, a.W}), "sum_h");
  return n;
}

inline int64_t check_args(const Check& c, const BaldFinalizeArgs& a) {
  c(a.T >= 1 && a.C >= 1, "T and C must be >= 1");
  c.array(a.sum_p, c.numel({a.B, a.C, a.H, a.W}), "sum_p");
  const int64_t pixels = c.numel({a.B, a.H, a.W});
  c.array(a.sum_h, pixels, "sum_h");
  c.array(a.bald, pixels, "bald");
  c.array(a.entropy, pixels, "entropy");
  return pixels;
}

}  // namespace fastral
