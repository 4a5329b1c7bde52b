// MC-dropout BALD on the CPU: BALD = H[mean_t p_t] - mean_t H[p_t] per pixel, from T stacked samples or streamed
// (contract: fastral/ops/bald.py, reference_bald and BaldAccumulator).
//
// Design. Pixels are independent: every kernel splits each image into blocks of P pixels (a staging tile, see
// pixel_entropy.h) and gives each block to one thread, so outputs are bit-identical for any thread count. Per
// chunk of 8 pixels, pixel_stats gives a sample's entropy and its probabilities p_c = e^{z_c - m} / s (or x_c / S).
//   accumulate:    sums p_t in a [C, P] tile and H[p_t] in a row over the T samples of a block; the input is
//                  read once. Two layouts:
//                  [T, B, C, H, W] (fastral's): sample by sample, each staged into a [C, P] tile in contiguous
//                  runs of P pixels per class;
//                  [B, C, H, W, T] (baal's, sample_last): the T samples of a score are adjacent, so the block
//                  stages all T samples at once, transposed to a [T, C, P] tile (stage_sample_last; P chosen so
//                  the tile stays within 256 KB), then reads it sample by sample: memory is read once here too,
//                  and no transposed copy of the input is made.
//   bald_stacked:  accumulate, then finish the block; sum_t p_t never goes to memory.
//   bald_update:   accumulate the T (often 1) samples given, then write or add the tile to sum_p class by class
//                  (contiguous runs again) and the row to sum_h.
//   bald_finalize: entropy = H[sum_p / T] (0 log 0 = 0), bald = entropy - sum_h / T over staged tiles of sum_p;
//                  the last step of bald_stacked too (finish()).
#include <omp.h>

#include "pixel_entropy.h"

namespace fastral {
FASTRAL_DECLARE_CPU_KERNELS(FASTRAL_ISA)
namespace FASTRAL_ISA {
namespace {

// Writes entropy and BALD of a chunk from its summed probabilities and entropies over T samples.
template <class ChunkT>
FASTRAL_INLINE void finish(const TileReader& sum_p, vf sum_h, int64_t C, vf inv_t, ChunkT chunk, float* bald,
                           float* entropy) {
  const vf ent = entropy_of_mean(sum_p, C, inv_t);
  chunk.store(entropy, ent);
  chunk.store(bald, ent - sum_h * inv_t);
}

// Calls f(tid, b, begin, n) for blocks [begin, begin + n) of at most P pixels of each of B images, in parallel,
// and ORs the flags it returns.
template <class F>
int for_each_block(int64_t B, int64_t plane, int64_t P, int nthreads, F&& f) {
  const int64_t per_image = (plane + P - 1) / P;
  int flags = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(| : flags)
  for (int64_t item = 0; item < B * per_image; ++item) {
    const int64_t b = item / per_image, begin = (item % per_image) * P;
    flags |= f(omp_get_thread_num(), b, begin, min_(P, plane - begin));
  }
  return flags;
}

// Where the scores of one (sample, image) start and how far apart its classes and pixels are, in elements.
struct Layout {
  int64_t sample, image, cls, pixel;
};

FASTRAL_INLINE Layout layout_of(int64_t T, int64_t B, int64_t C, int64_t plane, bool sample_last) {
  if (sample_last) return {1, C * plane * T, plane * T, T};
  return {B * C * plane, C * plane, plane, 1};
}

// Per-thread scratch of accumulate(): the staged scores (one sample [C, P]; all T of them [T, C, P] in baal's
// layout), sum_t p [C, P], sum_t H [P], and C vectors for pixel_stats.
struct Scratch {
  int64_t C, P, staged;
  Buffer<float> tiles;
  Buffer<vf> e;
  Scratch(int nthreads, int64_t T, int64_t C_, bool sample_last)
      : C(C_), P(sample_last ? sample_last_tile_pixels(T, C_) : tile_pixels(C_)), staged((sample_last ? T : 1) * C * P),
        tiles(nthreads * (staged + (C + 1) * P)), e(nthreads * C_) {}
  float* tile(int tid) const { return tiles.get() + tid * (staged + (C + 1) * P); }
  float* acc(int tid) const { return tile(tid) + staged; }
  float* acc_h(int tid) const { return acc(tid) + C * P; }
};

// Sums p_t and H[p_t] over the T samples of pixels [begin, begin + n) of image b into s.acc(tid) [C, P] and
// s.acc_h(tid) [P]; returns the flags.
template <bool kFromLogits, class T>
int accumulate(const T* x, const Layout& L, int64_t T_, int64_t b, int64_t begin, int64_t n, const Scratch& s,
               int tid) {
  const int64_t C = s.C, P = s.P;
  float* tile = s.tile(tid);
  float* acc = s.acc(tid);
  float* acc_h = s.acc_h(tid);
  vf* e = s.e.get() + tid * C;
  for (int64_t i = 0; i < (C + 1) * P; ++i) acc[i] = 0.0f;
  const T* image = x + b * L.image + begin * L.pixel;
  int flags = 0;
  auto add_sample = [&](int64_t i, auto chunk, const TileReader& scores) {
    auto add = [&](int64_t c, vf p) { store(acc + c * P + i, load(acc + c * P + i) + p); };
    const PixelStats st = pixel_stats<kFromLogits, false>(scores, C, chunk.valid(), e, add);
    flags |= st.flags;
    store(acc_h + i, load(acc_h + i) + st.entropy);
  };
  if (L.pixel == 1) {
    for (int64_t t = 0; t < T_; ++t) {
      stage(image + t * L.sample, L.cls, C, n, tile, P);
      for_each_chunk(0, n, [&](int64_t i, auto chunk) { add_sample(i, chunk, TileReader{tile + i, P}); });
    }
  } else {
    stage_sample_last(image, L.cls, T_, C, n, tile, P);
    for (int64_t t = 0; t < T_; ++t) {
      const float* sample = tile + t * C * P;
      for_each_chunk(0, n, [&](int64_t i, auto chunk) { add_sample(i, chunk, TileReader{sample + i, P}); });
    }
  }
  return flags;
}

template <bool kFromLogits, class T>
int stacked(const Cpu<BaldStackedArgs>& a, const T* x) {
  const int64_t plane = a.H * a.W;
  const Scratch s(a.nthreads, a.T, a.C, a.sample_last);
  const Layout L = layout_of(a.T, a.B, a.C, plane, a.sample_last);
  const vf inv_t = splat(1.0f / static_cast<float>(a.T));
  return for_each_block(a.B, plane, s.P, a.nthreads, [&](int tid, int64_t b, int64_t begin, int64_t n) {
    const int flags = accumulate<kFromLogits>(x, L, a.T, b, begin, n, s, tid);
    const float* acc = s.acc(tid);
    const float* acc_h = s.acc_h(tid);
    for_each_chunk(0, n, [&](int64_t i, auto chunk) {
      finish(TileReader{acc + i, s.P}, load(acc_h + i), a.C, inv_t, chunk, a.bald + b * plane + begin + i,
             a.entropy + b * plane + begin + i);
    });
    return flags;
  });
}

template <bool kFromLogits, class T>
int update(const Cpu<BaldUpdateArgs>& a, const T* x) {
  const int64_t C = a.C, plane = a.H * a.W;
  const Scratch s(a.nthreads, a.T, C, a.sample_last);
  const Layout L = layout_of(a.T, a.B, C, plane, a.sample_last);
  return for_each_block(a.B, plane, s.P, a.nthreads, [&](int tid, int64_t b, int64_t begin, int64_t n) {
    const int flags = accumulate<kFromLogits>(x, L, a.T, b, begin, n, s, tid);
    const float* acc_h = s.acc_h(tid);
    float* sum_h = a.sum_h + b * plane + begin;
    for_each_chunk(0, n, [&](int64_t i, auto chunk) {
      chunk.store(sum_h + i, a.first ? load(acc_h + i) : chunk.load(sum_h + i) + load(acc_h + i));
    });
    for (int64_t c = 0; c < C; ++c) {
      if (c + kPrefetchRuns < C) prefetch_run<true>(a.sum_p + (b * C + c + kPrefetchRuns) * plane + begin, n);
      float* sum_p = a.sum_p + (b * C + c) * plane + begin;
      const float* p = s.acc(tid) + c * s.P;
      for_each_chunk(0, n, [&](int64_t i, auto chunk) {
        chunk.store(sum_p + i, a.first ? load(p + i) : chunk.load(sum_p + i) + load(p + i));
      });
    }
    return flags;
  });
}

}  // namespace

int bald_stacked(const Cpu<BaldStackedArgs>& args) {
  return with_dtype(args.dtype, args.x, [&](const auto* x) {
    return args.from_logits ? stacked<true>(args, x) : stacked<false>(args, x);
  });
}

int bald_update(const Cpu<BaldUpdateArgs>& args) {
  return with_dtype(args.dtype, args.x, [&](const auto* x) {
    return args.from_logits ? update<true>(args, x) : update<false>(args, x);
  });
}

void bald_finalize(const Cpu<BaldFinalizeArgs>& a) {
  const int64_t C = a.C, plane = a.H * a.W;
  const int64_t P = tile_pixels(C);
  Buffer<float> tiles(a.nthreads * C * P);
  const vf inv_t = splat(1.0f / static_cast<float>(a.T));
  for_each_block(a.B, plane, P, a.nthreads, [&](int tid, int64_t b, int64_t begin, int64_t n) {
    float* tile = tiles.get() + tid * C * P;
    stage(a.sum_p + b * C * plane + begin, plane, C, n, tile, P);
    const int64_t at = b * plane + begin;
    for_each_chunk(0, n, [&](int64_t i, auto chunk) {
      finish(TileReader{tile + i, P}, chunk.load(a.sum_h + at + i), C, inv_t, chunk, a.bald + at + i,
             a.entropy + at + i);
    });
    return 0;
  });
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
