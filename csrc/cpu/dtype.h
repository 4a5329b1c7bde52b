// Loading 8 consecutive scores of any input dtype as float32 lanes, and the Chunk that says how many lanes of a
// pixel chunk are real pixels.
//
// float16 converts with F16C where the build has it (the AVX2 build) and otherwise with an exact bit-level
// conversion; bfloat16 is the top half of a float32. A partial chunk (the last pixels of a row or plane) loads only
// its n lanes and pads the rest with 0, so no kernel reads past the end of a buffer.
#pragma once

#include <cstring>

#include "simd_math.h"

namespace fastral {
namespace FASTRAL_ISA {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

typedef uint16_t vu16 __attribute__((vector_size(16)));
typedef uint8_t vu8 __attribute__((vector_size(8)));

// 8 raw float16 / bfloat16 values as float32 lanes.
FASTRAL_INLINE vf widen(vu16 h, BFloat16) { return as_float(__builtin_convertvector(h, vi) << 16); }

FASTRAL_INLINE vf widen(vu16 raw, Half) {
#if defined(__F16C__)
  return reinterpret_cast<vf>(_mm256_cvtph_ps(reinterpret_cast<__m128i>(raw)));
#else
  vi h = __builtin_convertvector(raw, vi);
  vi em = h & splat(0x7fff);                    // exponent and mantissa
  vi o = (em << 13) + splat(112 << 23);         // rebias the exponent: 15 -> 127
  o = em >= splat(0x7c00) ? o + splat(112 << 23) : o;  // inf / NaN: exponent 31 -> 255
  // Zero and subnormals: 2^-14 * (1 + mant / 1024) - 2^-14 = mant * 2^-24, exactly.
  vf sub = as_float(o + splat(1 << 23)) - as_float(splat(113 << 23));
  vf v = em < splat(0x0400) ? sub : as_float(o);
  return as_float(as_int(v) | ((h & splat(0x8000)) << 16));
#endif
}

template <class T>
FASTRAL_INLINE vf load(const T* p) {
  static_assert(sizeof(T) == 2, "float32 loads are in simd_math.h");
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  return widen(h, T{});
}

// One score as float32.
FASTRAL_INLINE float to_float(float v) { return v; }
FASTRAL_INLINE float to_float(BFloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
FASTRAL_INLINE float to_float(Half v) { return widen(vu16{v.bits}, Half{})[0]; }

// Whether lanes are valid (nonzero mask byte = ignored pixel).
FASTRAL_INLINE vi unmasked(const uint8_t* p) {
#if defined(__AVX2__)
  const __m256i m = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return reinterpret_cast<vi>(m) == splat(0);
#else
  vu8 m;
  std::memcpy(&m, p, sizeof m);
  return __builtin_convertvector(m, vi) == splat(0);
#endif
}

// A chunk of up to kLanes consecutive pixels; kFull means all kLanes are pixels, known at compile time.
template <bool kFull>
struct Chunk {
  int64_t n;  // pixels in the chunk

  vi valid() const {
    if constexpr (kFull) return splat(-1);
    else return lane_index() < splat(static_cast<int32_t>(n));
  }
  template <class T>
  auto load(const T* p) const {
    if constexpr (kFull) {
      return FASTRAL_ISA::load(p);
    } else {
      T tmp[kLanes] = {};
      std::memcpy(tmp, p, n * sizeof(T));
      return FASTRAL_ISA::load(tmp);
    }
  }
  vi load_unmasked(const uint8_t* p) const {
    if constexpr (kFull) {
      return unmasked(p);
    } else {
      uint8_t tmp[kLanes] = {1, 1, 1, 1, 1, 1, 1, 1};
      std::memcpy(tmp, p, n);
      return unmasked(tmp);
    }
  }
  template <class T, class V>
  void store(T* p, V v) const {
    if constexpr (kFull) std::memcpy(p, &v, sizeof v);
    else std::memcpy(p, &v, n * sizeof(T));
  }
};

// Calls f with the scores pointer cast to its element type.
template <class F>
FASTRAL_INLINE auto with_dtype(Dtype dtype, const void* x, F&& f) {
  switch (dtype) {
    case Dtype::kFloat16:
      return f(static_cast<const Half*>(x));
    case Dtype::kBFloat16:
      return f(static_cast<const BFloat16*>(x));
    default:
      return f(static_cast<const float*>(x));
  }
}

// Calls f with kFull = true for every full chunk of the pixels [begin, end) and kFull = false for the remainder.
template <class F>
FASTRAL_INLINE void for_each_chunk(int64_t begin, int64_t end, F&& f) {
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) f(i, Chunk<true>{kLanes});
  if (i < end) f(i, Chunk<false>{end - i});
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
