// 8-lane float vectors and the vectorised exp/log the kernels' inner loops use.
//
// Written with GCC/Clang vector extensions rather than intrinsics, so one source serves every build: the AVX2 build
// (-mavx2 -mfma) maps each operation onto one ymm instruction (multiply-adds contract to FMA), the baseline x86-64
// build onto pairs of SSE2 instructions, other architectures onto their own vector units. Library expf/logf run
// at well under 1 G elements/s per core here; these run several times faster, within a few ulp:
//   exp: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then e^r = 1 + r + r^2 Q(r) with a degree-4 minimax Q
//        (relative error of the polynomial 4e-9), scaled by 2^n built in the exponent bits; max error ~1.2 ulp.
//        Arguments below -87.7 give exactly 0 (between -87.7 and ln(FLT_MIN) = -87.34, subnormals); arguments
//        are clamped above at 88.37 (the kernels only pass values <= 0); NaN propagates.
//   log: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log(1 + f) = f - f^2/2 + f^3 P(f) with a degree-7 minimax P
//        (relative error 6e-9), max error ~0.9 ulp. For x >= FLT_MIN only; log(0) and subnormals give a finite
//        value near -88 (so that 0 * log 0 = 0), negative and non-finite inputs a finite meaningless one: callers
//        flag those.
// The polynomial coefficients were fitted for fastral (Lawson's iteratively reweighted least squares, in float64,
// rounded to float32). tests/test_simd_math.py measures both errors in ulp against float64 on every ISA build.
#pragma once

#include <cstring>

#include "common.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace fastral {
namespace FASTRAL_ISA {

constexpr int kLanes = 8;
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));  // also the type of comparison masks: -1 (true) or 0

FASTRAL_INLINE vf splat(float s) { return vf{s, s, s, s, s, s, s, s}; }
FASTRAL_INLINE vi splat(int32_t s) { return vi{s, s, s, s, s, s, s, s}; }
FASTRAL_INLINE vi lane_index() { return vi{0, 1, 2, 3, 4, 5, 6, 7}; }

FASTRAL_INLINE vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
FASTRAL_INLINE vi load(const int32_t* p) {
  vi v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
FASTRAL_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
FASTRAL_INLINE void store(int32_t* p, vi v) { std::memcpy(p, &v, sizeof v); }

// x86 min/max semantics in every build: where either is NaN the result is b. (GCC does not turn the vector
// ternary into one min/max instruction, hence the intrinsics.)
FASTRAL_INLINE vf vmin(vf a, vf b) {
#if defined(__AVX__)
  return reinterpret_cast<vf>(_mm256_min_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b)));
#else
  return a < b ? a : b;
#endif
}
FASTRAL_INLINE vf vmax(vf a, vf b) {
#if defined(__AVX__)
  return reinterpret_cast<vf>(_mm256_max_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b)));
#else
  return a > b ? a : b;
#endif
}
FASTRAL_INLINE vi vmin(vi a, vi b) {
#if defined(__AVX2__)
  return reinterpret_cast<vi>(_mm256_min_epi32(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(b)));
#else
  return a < b ? a : b;
#endif
}
FASTRAL_INLINE vf to_float(vi v) { return __builtin_convertvector(v, vf); }
FASTRAL_INLINE vi as_int(vf v) { return reinterpret_cast<vi>(v); }
FASTRAL_INLINE vf as_float(vi v) { return reinterpret_cast<vf>(v); }

// Transposes the 8 x 8 matrix whose rows are r[0..7] in place: afterwards r[k] = (old r[0][k], ..., r[7][k]).
// The classic 24 shuffles (unpack, shuffle within 128-bit halves, swap halves), one instruction each on AVX.
FASTRAL_INLINE void transpose8(vf r[8]) {
  vf a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = __builtin_shuffle(r[i], r[i + 1], vi{0, 8, 1, 9, 4, 12, 5, 13});
    a[i + 1] = __builtin_shuffle(r[i], r[i + 1], vi{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4) {
    for (int k = 0; k < 2; ++k) {
      b[i + 2 * k] = __builtin_shuffle(a[i + k], a[i + k + 2], vi{0, 1, 8, 9, 4, 5, 12, 13});
      b[i + 2 * k + 1] = __builtin_shuffle(a[i + k], a[i + k + 2], vi{2, 3, 10, 11, 6, 7, 14, 15});
    }
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = __builtin_shuffle(b[k], b[k + 4], vi{0, 1, 2, 3, 8, 9, 10, 11});
    r[k + 4] = __builtin_shuffle(b[k], b[k + 4], vi{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// Horizontal reductions, lane by lane in a fixed order.
FASTRAL_INLINE float hmin(vf v) {
  float r = v[0];
  for (int i = 1; i < kLanes; ++i) r = r < v[i] ? r : v[i];
  return r;
}
FASTRAL_INLINE float hmax(vf v) {
  float r = v[0];
  for (int i = 1; i < kLanes; ++i) r = r > v[i] ? r : v[i];
  return r;
}
FASTRAL_INLINE float hsum(vf v) {
  float r = v[0];
  for (int i = 1; i < kLanes; ++i) r += v[i];
  return r;
}
FASTRAL_INLINE int32_t hsum(vi v) {
  int32_t r = v[0];
  for (int i = 1; i < kLanes; ++i) r += v[i];
  return r;
}

// Whether any lane of a mask is set.
FASTRAL_INLINE bool any(vi m) {
#if defined(__AVX__)
  return _mm256_movemask_ps(reinterpret_cast<__m256>(m)) != 0;
#else
  int32_t r = 0;
  for (int i = 0; i < kLanes; ++i) r |= m[i];
  return r != 0;
#endif
}

// Lanes holding a finite value (x - x is 0 exactly when x is finite).
FASTRAL_INLINE vi finite(vf x) { return (x - x) == splat(0.0f); }

FASTRAL_INLINE vf exp(vf x) {
  // Clamped to [-88, 88.37] (NaN stays NaN): then n = round(x / ln2) lies in [-127, 127], and n = -127 gives a
  // zero scale, so every argument below -87.7 returns exactly 0.
  const vf xc = vmin(splat(88.37f), vmax(splat(-88.0f), x));
  // n by the 1.5 * 2^23 + 127 trick: t's low mantissa bits then hold n + 127, which shifted into the exponent
  // field is the scale 2^n (bits above the field shift out).
  const vf shifter = splat(12582912.0f + 127.0f);
  const vf t = xc * splat(1.44269504f) + shifter;
  const vf n = t - shifter;
  vf r = xc - n * splat(0.693359375f);  // ln2 split in a short head (n * head is exact) and a tail
  r = r - n * splat(-2.12194440e-4f);
  vf p = splat(0.00138103182f);  // e^r = 1 + r + r^2 (q0 + q1 r + ... + q4 r^4), in Horner form
  p = p * r + splat(0.00837078039f);
  p = p * r + splat(0.0416685939f);
  p = p * r + splat(0.166665033f);
  p = p * r + splat(0.499999911f);
  p = p * r + splat(1.0f);
  p = p * r + splat(1.0f);
  return p * as_float(as_int(t) << 23);
}

FASTRAL_INLINE vf log(vf x) {
  vi bits = as_int(x);
  vi e = ((bits >> 23) & splat(0xff)) - splat(127);
  vf m = as_float((bits & splat(0x007fffff)) | splat(0x3f800000));  // [1, 2)
  vi big = m > splat(1.41421356f);
  m = big ? m * splat(0.5f) : m;
  e = e - big;  // big is -1 where true
  vf f = m - splat(1.0f);
  vf p = splat(-0.0764614642f);
  p = p * f + splat(0.127791792f);
  p = p * f + splat(-0.131642014f);
  p = p * f + splat(0.141996875f);
  p = p * f + splat(-0.166227624f);
  p = p * f + splat(0.200012922f);
  p = p * f + splat(-0.250008374f);
  p = p * f + splat(0.333333313f);
  vf f2 = f * f;
  vf ef = to_float(e);
  vf tail = ef * splat(-2.12194440e-4f) + (p * (f2 * f) - splat(0.5f) * f2);
  return ef * splat(0.693359375f) + (f + tail);
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
