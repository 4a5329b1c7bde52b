// Per-pixel entropy, argmax and class probabilities for a chunk of 8 pixels: the one body that region_stats and
// the BALD kernels share (fastral.pixel_entropy is its PyTorch twin).
//
// The scores of a pixel are strided (NCHW: class c of pixel i at x[c * stride + i]); the 8 lanes are 8
// consecutive pixels, so every load is a contiguous 8-element vector. Two passes over the classes, the second
// reading from L1:
//   logits:        m = max_c z_c;  s = sum e^{z_c - m};  t = sum e^{z_c - m} (z_c - m);  H = log s - t / s
//                  (C exps and one log per pixel; exact for confident pixels, no epsilon)
//   probabilities: S = sum x_c;  H = log S - sum x_c log x_c / S  (0 log 0 = 0; C logs per pixel)
// Non-finite scores always make H non-finite, so the flag check only rescans the scores of a chunk whose H is
// not finite.
#pragma once

#include <type_traits>

#include "dtype.h"

namespace fastral {
namespace FASTRAL_ISA {

// Reads class c of a chunk's pixels.
template <class T, class ChunkT>
struct ClassReader {
  const T* x;      // class 0 of the chunk's first pixel
  int64_t stride;  // elements between classes
  ChunkT chunk;

  FASTRAL_INLINE vf operator()(int64_t c) const { return chunk.load(x + c * stride); }
};

template <class T, class ChunkT>
FASTRAL_INLINE ClassReader<T, ChunkT> class_reader(const T* x, int64_t stride, ChunkT chunk) {
  return {x, stride, chunk};
}

struct PixelStats {
  vf entropy;
  vi label;  // argmax, ties to the lowest class (kArgmax only)
  vf total;  // probabilities: sum of the scores (0 -> kFlagZeroSum)
  vf low;    // probabilities: smallest score (< 0 -> kFlagNegative)
};

// Sink that discards the probabilities.
struct NoProbs {
  FASTRAL_INLINE void operator()(int64_t, vf) const {}
};

// Entropy of the chunk's pixels; with kArgmax also their argmax; with a sink other than NoProbs also their
// normalised probabilities, handed over as sink(c, p_c). `e` is scratch for C vectors (logits with a sink only).
template <bool kFromLogits, bool kArgmax, class Reader, class Sink>
FASTRAL_INLINE PixelStats pixel_stats(const Reader& x, int64_t C, vf* e, const Sink& sink) {
  constexpr bool kProbs = !std::is_same_v<Sink, NoProbs>;
  PixelStats st;
  vf best = x(0);
  vi label = splat(0), cls = splat(0);
  vf total = best, low = best;
#pragma GCC unroll 2
  for (int64_t c = 1; c < C; ++c) {
    const vf z = x(c);
    if constexpr (kArgmax) {
      cls += splat(1);
      label = z > best ? cls : label;
    }
    if constexpr (kArgmax || kFromLogits) best = vmax(z, best);
    if constexpr (!kFromLogits) {
      total += z;
      low = vmin(z, low);
    }
  }
  st.label = label;
  if constexpr (kFromLogits) {
    vf s = splat(0.0f), t = splat(0.0f);
#pragma GCC unroll 2
    for (int64_t c = 0; c < C; ++c) {
      vf z = x(c) - best;
      vf ez = exp(z);
      s += ez;
      t += ez * z;
      if constexpr (kProbs) e[c] = ez;
    }
    st.entropy = log(s) - t / s;
    if constexpr (kProbs) {
      vf inv = splat(1.0f) / s;
      for (int64_t c = 0; c < C; ++c) sink(c, e[c] * inv);
    }
  } else {
    vf xlogx = splat(0.0f);
    for (int64_t c = 0; c < C; ++c) {
      vf v = x(c);
      xlogx += v * log(v);
    }
    st.entropy = log(total) - xlogx / total;
    st.total = total;
    st.low = low;
    if constexpr (kProbs) {
      vf inv = splat(1.0f) / total;
      for (int64_t c = 0; c < C; ++c) sink(c, x(c) * inv);
    }
  }
  return st;
}

// kFlag* bits of a chunk from its stats, over the lanes in `valid` only.
template <bool kFromLogits, class Reader>
FASTRAL_INLINE int chunk_flags(const PixelStats& st, vi valid, const Reader& x, int64_t C) {
  int flags = 0;
  if (__builtin_expect(any(valid & ~finite(st.entropy)), 0)) {
    for (int64_t c = 0; c < C; ++c) {
      if (any(valid & ~finite(x(c)))) {
        flags |= kFlagNonFinite;
        break;
      }
    }
  }
  if constexpr (!kFromLogits) {
    if (any(valid & (st.low < splat(0.0f)))) flags |= kFlagNegative;
    if (any(valid & (st.total == splat(0.0f)))) flags |= kFlagZeroSum;
  }
  return flags;
}

// Entropy -sum_c m_c log m_c of the mean m = sum_c * inv_count of accumulated probabilities (0 log 0 = 0).
template <class Reader>
FASTRAL_INLINE vf entropy_of_mean(const Reader& sum, int64_t C, vf inv_count) {
  vf acc = splat(0.0f);
  for (int64_t c = 0; c < C; ++c) {
    vf m = sum(c) * inv_count;
    acc += m * log(m);
  }
  return -acc;
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
