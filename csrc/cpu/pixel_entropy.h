// Per-pixel entropy, argmax and class probabilities of 8 pixels at a time: the one body that region_stats and
// the BALD kernels share (fastral.pixel_entropy is its PyTorch twin), and the staging of the scores it reads.
//
// NCHW scores put the C classes of a pixel a plane apart; the 8 lanes are 8 consecutive pixels, so every load is
// one contiguous vector. Per chunk of 8 pixels, two passes over the classes, the second reading from L1:
//   logits:        m = max_c z_c;  s = sum e^{z_c - m};  t = sum e^{z_c - m} (z_c - m);  H = log s - t / s
//                  (C exps and one log per pixel; exact for confident pixels, no epsilon)
//   probabilities: S = sum x_c;  H = log S - sum x_c log x_c / S  (0 log 0 = 0; C logs per pixel)
// Non-finite scores always make H non-finite, so the flag check only rescans the scores of a chunk whose H is
// not finite (and recomputes it, clamped, when the logits were finite but their spread overflowed float32).
//
// Staging. Where planes are a multiple of 4 KB apart (most image sizes), the C lines a chunk touches share cache
// sets, and streams that also write per class (BALD's sum_p) thrash them. The BALD kernels therefore first copy a
// run of P pixels of every class into a float32 tile [C][P] (converting float16/bfloat16 on the way), class by
// class, and compute from the tile, which stays in L1: bald_update ran 1.7x faster so. region_stats reads the
// scores in place (ScoreReader): there the copy and its load bursts, which no longer overlap the exp work, cost
// more (about 20%) than they save.
#pragma once

#include <cfloat>
#include <type_traits>

#include "dtype.h"

namespace fastral {
namespace FASTRAL_ISA {

// Pixels per staging tile for C classes: the largest multiple of kLanes with C * P <= 4096 floats (16 KB, half of
// L1), within [kLanes, 512].
FASTRAL_INLINE int64_t tile_pixels(int64_t C) {
  return max_<int64_t>(kLanes, min_<int64_t>(512, 4096 / C / kLanes * kLanes));
}

// Copies of class runs prefetch the run kPrefetchRuns classes ahead: runs at the same offset of 4 KB-aligned
// planes share cache sets, so a few more than that in flight would evict each other (L1 is 8-way). Measured
// 15-20% faster for bald_update.
constexpr int64_t kPrefetchRuns = 6;

// Prefetches the cache lines of elements [0, n) of p (for writing if kWrite).
template <bool kWrite = false, class T>
FASTRAL_INLINE void prefetch_run(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / sizeof(T)) __builtin_prefetch(p + i, kWrite);
}

// Copies pixels [0, n) of C class planes (`plane` elements apart) into tile[c * P + i] as float32, padding each
// class row with zeros to a whole chunk.
template <class T>
FASTRAL_INLINE void stage(const T* x, int64_t plane, int64_t C, int64_t n, float* tile, int64_t P) {
  for (int64_t c = 0; c < C; ++c) {
    if (c + kPrefetchRuns < C) prefetch_run(x + (c + kPrefetchRuns) * plane, n);
    for_each_chunk(0, n, [&](int64_t i, auto chunk) { store(tile + c * P + i, chunk.load(x + c * plane + i)); });
  }
}

// Pixels per block in baal's layout, where a block stages all T samples at once: the largest multiple of kLanes
// with T * C * P <= 64 Ki floats (256 KB, within L2), within [kLanes, tile_pixels(C)].
FASTRAL_INLINE int64_t sample_last_tile_pixels(int64_t T, int64_t C) {
  return max_<int64_t>(kLanes, min_<int64_t>(tile_pixels(C), 65536 / (T * C) / kLanes * kLanes));
}

// Stages pixels [0, n) of C classes in baal's layout (class c's pixel i, sample t at x[c * plane + i * T + t])
// as float32 tile[(t * C + c) * P + i], zero-padding each row to a whole chunk: the transposed copy of a block.
// Each class is one contiguous run of n * T scores, read front to back (one stream for the prefetchers; the
// planes are a multiple of 4 KB apart for most image sizes, see above). 8 samples of 8 pixels at a time go
// through a register transpose (element by element a copy costs as much as the BALD arithmetic); the last T % 8
// samples one by one.
template <class T>
FASTRAL_INLINE void stage_sample_last(const T* x, int64_t plane, int64_t T_, int64_t C, int64_t n, float* tile,
                                      int64_t P) {
  const int64_t sample = C * P;  // tile floats between samples
  for (int64_t c = 0; c < C; ++c) {
    for_each_chunk(0, n, [&](int64_t i, auto chunk) {
      const T* rows = x + c * plane + i * T_;  // sample t of pixel i + j at rows[j * T + t]
      float* out = tile + c * P + i;
      int64_t t = 0;
      for (; t + kLanes <= T_; t += kLanes) {
        vf r[kLanes];
        for (int64_t j = 0; j < kLanes; ++j) r[j] = j < chunk.n ? load(rows + j * T_ + t) : splat(0.0f);
        transpose8(r);
        for (int64_t k = 0; k < kLanes; ++k) store(out + (t + k) * sample, r[k]);
      }
      for (; t < T_; ++t) {
        vf v = splat(0.0f);
        for (int64_t j = 0; j < chunk.n; ++j) v[j] = to_float(rows[j * T_ + t]);
        store(out + t * sample, v);
      }
    });
  }
}

// Reads class c of 8 pixels: from scores in memory (ScoreReader: any dtype, classes `stride` elements apart, a
// partial chunk padded with zeros) or from a tile (TileReader).
template <class T, class ChunkT>
struct ScoreReader {
  const T* x;  // class 0 of the first pixel
  int64_t stride;
  ChunkT chunk;

  FASTRAL_INLINE vf operator()(int64_t c) const { return chunk.load(x + c * stride); }
};

template <class T, class ChunkT>
FASTRAL_INLINE ScoreReader<T, ChunkT> score_reader(const T* x, int64_t stride, ChunkT chunk) {
  return {x, stride, chunk};
}

struct TileReader {
  const float* x;  // class 0 of the first pixel
  int64_t stride;

  FASTRAL_INLINE vf operator()(int64_t c) const { return load(x + c * stride); }
};

struct PixelStats {
  vf entropy;
  vi label;   // argmax, ties to the lowest class (kArgmax only)
  int flags;  // kFlag* bits, over the valid lanes only
};

// Sink that discards the probabilities.
struct NoProbs {
  FASTRAL_INLINE void operator()(int64_t, vf) const {}
};

// Whether some class is NaN or infinite in a lane of `valid`.
template <class Reader>
FASTRAL_INLINE bool any_nonfinite(const Reader& x, int64_t C, vi valid) {
  for (int64_t c = 0; c < C; ++c) {
    if (any(valid & ~finite(x(c)))) return true;
  }
  return false;
}

// Entropy of 8 pixels; with kArgmax also their argmax; with a sink other than NoProbs also their normalised
// probabilities, handed over as sink(c, p_c) once x has been read for good (a sink may overwrite x in place).
// Flags count the lanes in `valid` only. `e` is scratch for C vectors (logits with a sink only).
template <bool kFromLogits, bool kArgmax, class Reader, class Sink>
FASTRAL_INLINE PixelStats pixel_stats(const Reader& x, int64_t C, vi valid, vf* e, const Sink& sink) {
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
  vf norm;  // s or S: what the probabilities are divided by
  // kClamp: finite logits whose spread overflows float32 make z = -inf and e^z z = 0 (-inf) = NaN; clamped to -128,
  // where e^z is 0 all the same, the sums are exact. Only rerun for a chunk whose entropy came out non-finite from
  // finite logits, so the common path pays nothing (the clamp would also hide a -inf logit from the flag check).
  auto logit_pass = [&](auto clamp) {
    vf s = splat(0.0f), t = splat(0.0f);
#pragma GCC unroll 2
    for (int64_t c = 0; c < C; ++c) {
      vf z = x(c) - best;
      if constexpr (decltype(clamp)::value) z = vmax(z, splat(-128.0f));
      const vf ez = exp(z);
      s += ez;
      t += ez * z;
      if constexpr (kProbs) e[c] = ez;
    }
    st.entropy = log(s) - t / s;
    norm = s;
  };
  if constexpr (kFromLogits) {
    logit_pass(std::false_type{});
  } else {
    vf xlogx = splat(0.0f);
    for (int64_t c = 0; c < C; ++c) {
      const vf v = x(c);
      xlogx += v * log(v);
    }
    st.entropy = log(total) - xlogx / total;
    norm = total;
  }

  st.flags = 0;
  if (__builtin_expect(any(valid & ~finite(st.entropy)), 0)) {
    if (any_nonfinite(x, C, valid)) st.flags |= kFlagNonFinite;
    else if constexpr (kFromLogits) logit_pass(std::true_type{});
  }
  if constexpr (!kFromLogits) {
    if (any(valid & (low < splat(0.0f)))) st.flags |= kFlagNegative;
    // Zero, subnormal (1/S overflows, log S is off) or overflowing sums: refused, as by every backend.
    if (any(valid & ~((total >= splat(FLT_MIN)) & (total <= splat(FLT_MAX))))) st.flags |= kFlagSumRange;
  }

  if constexpr (kProbs) {
    const vf inv = splat(1.0f) / norm;
    for (int64_t c = 0; c < C; ++c) sink(c, (kFromLogits ? e[c] : x(c)) * inv);
  }
  return st;
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
