// Shared code of fastral's CUDA kernels.
//
// Host side: the error-check macros (every CUDA call's return code becomes a C++ exception, which pybind11 turns
// into a Python RuntimeError), the launch context (device, stream, the device's limits), status-flag read-back,
// the block-size choice for shared-memory-heavy kernels, and the dispatch from runtime dtype codes and flags to
// kernel template instances.
// Device side: 16-byte score loads for float32 / float16 / bfloat16, the per-pixel entropy accumulator that every
// kernel uses (PixelEntropy), and order-preserving float <-> int keys for integer min/max atomics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ops.h"

namespace fastral_cuda {

// ================================================================== host

inline std::string describe_cuda_error(cudaError_t err) {
  return std::string(cudaGetErrorString(err)) + " (" + cudaGetErrorName(err) + ")";
}

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  throw std::runtime_error(std::string("fastral._C_cuda: ") + what + " failed: " + describe_cuda_error(err) +
                           " [" + (base ? base + 1 : file) + ":" + std::to_string(line) + "]");
}

#define FASTRAL_CUDA_CHECK(expr)                                                              \
  do {                                                                                        \
    const cudaError_t fastral_err_ = (expr);                                                  \
    if (fastral_err_ != cudaSuccess) {                                                        \
      ::fastral_cuda::throw_cuda_error(fastral_err_, #expr, __FILE__, __LINE__);              \
    }                                                                                         \
  } while (0)

// After a kernel launch: a bad configuration (or an earlier asynchronous fault) surfaces here.
#define FASTRAL_CUDA_CHECK_LAUNCH(kernel_name)                                                \
  do {                                                                                        \
    const cudaError_t fastral_err_ = cudaGetLastError();                                      \
    if (fastral_err_ != cudaSuccess) {                                                        \
      ::fastral_cuda::throw_cuda_error(fastral_err_, "launch of " kernel_name, __FILE__, __LINE__); \
    }                                                                                         \
  } while (0)

// Status bits kernels report about the scores they read: the contract's (csrc/contract.h).
using fastral::kFlagNegative;
using fastral::kFlagNonFinite;
using fastral::kFlagSumRange;

// The device address an argument block holds, for the address arithmetic of the launchers.
inline Ptr address(const void* p) { return reinterpret_cast<Ptr>(p); }

// Where a call runs. The static CUDA runtime keeps its own current device, apart from torch's, so every entry
// point makes the caller's device current first; that is also the first CUDA call, which on a machine without a
// usable driver fails with a clear message.
struct Context {
  cudaStream_t stream;
  int sms;                // multiprocessors
  std::size_t smem_optin;  // the most dynamic shared memory one block may ask for
};

inline Context make_context(const Stream& s) {
  const cudaError_t err = cudaSetDevice(s.device);
  if (err != cudaSuccess) {
    throw std::runtime_error("fastral._C_cuda: cannot use CUDA device " + std::to_string(s.device) + ": " +
                             describe_cuda_error(err));
  }
  int sms = 0, smem = 0;
  FASTRAL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, s.device));
  FASTRAL_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, s.device));
  return {reinterpret_cast<cudaStream_t>(s.handle), sms, static_cast<std::size_t>(smem)};
}

// Zero the device flags word before the kernels of a call atomicOr into it.
inline void clear_flags(int* flags, const Context& ctx) {
  FASTRAL_CUDA_CHECK(cudaMemsetAsync(flags, 0, sizeof(int), ctx.stream));
}

// Copy the flags word back once the call's kernels are done (one stream synchronisation per call).
inline int read_flags(const int* flags, const Context& ctx) {
  int host = 0;
  FASTRAL_CUDA_CHECK(cudaMemcpyAsync(&host, flags, sizeof(int), cudaMemcpyDeviceToHost, ctx.stream));
  FASTRAL_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return host;
}

// Blocks may use more than the default 48 KiB of dynamic shared memory only after opting in, per kernel.
template <class Kernel>
void allow_shared_memory(Kernel kernel, std::size_t bytes) {
  if (bytes > 48 * 1024) {
    FASTRAL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

struct BlockSize {
  int threads;          // 0: not even 32 threads fit
  int resident_blocks;  // blocks of that size resident per multiprocessor
};

// The block size (256, 128, 64 or 32 threads) that keeps the most threads resident per multiprocessor, given the
// dynamic shared memory smem_bytes(threads) a block of that size needs; ties go to the larger block.
template <class Kernel, class SmemBytes>
BlockSize pick_block_size(Kernel kernel, SmemBytes smem_bytes, const Context& ctx) {
  BlockSize best{0, 0};
  for (const int threads : {256, 128, 64, 32}) {
    const std::size_t bytes = smem_bytes(threads);
    if (bytes > ctx.smem_optin) continue;
    allow_shared_memory(kernel, bytes);
    int blocks = 0;
    FASTRAL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, bytes));
    if (blocks * threads > best.resident_blocks * best.threads) best = {threads, blocks};
  }
  return best;
}

template <class T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}, L) with T the scalar type of dtype code `dtype` (0 float32, 1 float16, 2 bfloat16) and L
// std::integral_constant<bool, from_logits>: one kernel instance per combination.
template <class F>
void dispatch(int dtype, bool from_logits, F&& f) {
  auto with_flag = [&](auto tag) {
    from_logits ? f(tag, std::true_type{}) : f(tag, std::false_type{});
  };
  switch (dtype) {
    case static_cast<int>(fastral::Dtype::kFloat32): with_flag(Tag<float>{}); break;
    case static_cast<int>(fastral::Dtype::kFloat16): with_flag(Tag<__half>{}); break;
    case static_cast<int>(fastral::Dtype::kBFloat16): with_flag(Tag<__nv_bfloat16>{}); break;
    default: throw std::invalid_argument("fastral._C_cuda: unknown dtype code " + std::to_string(dtype));
  }
}

inline int dtype_size(int dtype) { return fastral::dtype_size(static_cast<fastral::Dtype>(dtype)); }

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// ================================================================== device

// Scores in one 16-byte load: 4 float32 or 8 float16/bfloat16.
template <class T>
constexpr int kVecWidth = 16 / static_cast<int>(sizeof(T));

template <class T>
union Vec16 {
  uint4 raw;
  T e[kVecWidth<T>];
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// The kVecWidth<T> scores of a 16-byte word, as floats.
template <class T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[kVecWidth<T>]) {
  Vec16<T> w;
  w.raw = raw;
#pragma unroll
  for (int v = 0; v < kVecWidth<T>; ++v) out[v] = to_float(w.e[v]);
}

// Scores of V = kVecWidth<T> consecutive pixels starting at p, as a raw 16-byte word. vec: one streaming 16-byte
// load (p 16-byte aligned, all V pixels in bounds; pixels with need[v] unset are loaded but ignored by the
// caller). Otherwise element loads of just the pixels with need[v] set, zeros elsewhere. `vec` is the same for a
// whole launch, so the branch costs nothing measurable and halves the kernel instances to compile.
template <class T>
__device__ __forceinline__ uint4 load_raw(const T* p, const bool (&need)[kVecWidth<T>], bool vec) {
  if (vec) return __ldcs(reinterpret_cast<const uint4*>(p));
  Vec16<T> w;
  w.raw = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int v = 0; v < kVecWidth<T>; ++v) {
    if (need[v]) w.e[v] = p[v];
  }
  return w.raw;
}

template <class T>
__device__ __forceinline__ void load_pixels(const T* p, const bool (&need)[kVecWidth<T>], bool vec,
                                            float (&out)[kVecWidth<T>]) {
  unpack<T>(load_raw<T>(p, need, vec), out);
}

// V consecutive floats of a float32 map (V a multiple of 4): float4 accesses when vec, else the first n only.
template <int V>
__device__ __forceinline__ void load_floats(const float* p, int n, bool vec, float (&out)[V]) {
#pragma unroll
  for (int v = 0; v < V; v += 4) {
    if (vec) {
      const float4 q = *reinterpret_cast<const float4*>(p + v);
      out[v] = q.x, out[v + 1] = q.y, out[v + 2] = q.z, out[v + 3] = q.w;
    } else {
#pragma unroll
      for (int k = v; k < v + 4; ++k) out[k] = k < n ? p[k] : 0.f;
    }
  }
}

template <int V>
__device__ __forceinline__ void store_floats(float* p, int n, bool vec, const float (&in)[V]) {
#pragma unroll
  for (int v = 0; v < V; v += 4) {
    if (vec) {
      *reinterpret_cast<float4*>(p + v) = make_float4(in[v], in[v + 1], in[v + 2], in[v + 3]);
    } else {
#pragma unroll
      for (int k = v; k < v + 4; ++k) {
        if (k < n) p[k] = in[k];
      }
    }
  }
}

// x log x with 0 log 0 = 0.
__device__ __forceinline__ float xlogx(float x) { return x > 0.f ? x * logf(x) : 0.f; }

// Entropy, argmax and status of one pixel's class scores, fed one class at a time: first(score of class 0), then
// add(score, c) for c = 1, 2, ... After the last class: status() (kFlag* bits), entropy() (natural log), argmax,
// and for the probabilities themselves norm() with prob(score, norm).
template <bool kLogits>
struct PixelEntropy;

// From logits, one pass: running max m, s = sum_c e^(z_c - m) and t = sum_c e^(z_c - m) (z_c - m), rescaled when
// the max moves. Either way a class costs one exp, e^-|z - m|. Then H = log s - t / s: the log-sum-exp form, no log
// of a probability and no epsilon, so exact for confident pixels (s -> 1, t -> 0-). The argmax is where the max
// last moved, so ties keep the lowest class. Finite scores whose difference overflows float32 are clamped to a
// difference of +-128, where e^-|d| is 0 all the same (so the sums are exact); the clamp would hide a NaN or +-inf
// score, so those are tested one by one.
template <>
struct PixelEntropy<true> {
  float m, s, t;
  int argmax;
  bool bad;

  __device__ __forceinline__ void first(float z) { m = z, s = 1.f, t = 0.f, argmax = 0, bad = !isfinite(z); }

  __device__ __forceinline__ void add(float z, int c) {
    bad |= !isfinite(z);
    const float d = fminf(fmaxf(z - m, -128.f), 128.f);
    const float e = __expf(-fabsf(d));
    if (d > 0.f) {  // a new max: the old sums scale by e^(m - z); the new class adds e^0 = 1 to s and 0 to t
      t = (t - d * s) * e;
      s = fmaf(s, e, 1.f);
      m = z, argmax = c;
    } else {
      s += e;
      t = fmaf(e, d, t);
    }
  }

  __device__ __forceinline__ int status() const { return bad ? kFlagNonFinite : 0; }
  __device__ __forceinline__ float entropy() const { return logf(s) - __fdividef(t, s); }
  __device__ __forceinline__ float norm() const { return m + logf(s); }  // log-sum-exp
  __device__ static __forceinline__ float prob(float z, float lse) { return __expf(z - lse); }
};

// From probabilities (unnormalised, as scipy.stats.entropy takes them): S = sum_c x_c and sum_c x_c log x_c, so
// H = log S - sum_c x_c log x_c / S with 0 log 0 = 0; one log per class. Strict > keeps ties at the lowest class.
template <>
struct PixelEntropy<false> {
  float s, xlx, best;
  int argmax, bad;

  __device__ static __forceinline__ int check(float x) {
    return (isfinite(x) ? 0 : kFlagNonFinite) | (x < 0.f ? kFlagNegative : 0);
  }

  __device__ __forceinline__ void first(float x) { s = x, xlx = xlogx(x), best = x, argmax = 0, bad = check(x); }

  __device__ __forceinline__ void add(float x, int c) {
    s += x;
    xlx += xlogx(x);
    if (x > best) best = x, argmax = c;
    bad |= check(x);
  }

  __device__ __forceinline__ int status() const { return bad | (s >= FLT_MIN && s <= FLT_MAX ? 0 : kFlagSumRange); }
  __device__ __forceinline__ float entropy() const { return logf(s) - xlx / s; }
  __device__ __forceinline__ float norm() const { return s; }
  __device__ static __forceinline__ float prob(float x, float sum) { return x / sum; }
};

// Floats as ints that order the same way, for integer atomicMin/atomicMax (order-independent: deterministic).
__device__ __forceinline__ int ordered_key(float f) {
  const int i = __float_as_int(f);
  return i >= 0 ? i : i ^ 0x7fffffff;
}
__device__ __forceinline__ float from_ordered_key(int k) { return __int_as_float(k >= 0 ? k : k ^ 0x7fffffff); }

// Dynamic shared memory of a kernel, as an array of U.
template <class U>
__device__ __forceinline__ U* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char fastral_smem[];
  return reinterpret_cast<U*>(fastral_smem);
}

}  // namespace fastral_cuda
