// MC-dropout BALD on the CPU: BALD = H[mean_t p_t] - mean_t H[p_t] per pixel, from T stacked samples or streamed
// one sample at a time (contract: fastral/ops/bald.py, reference_bald and BaldAccumulator).
//
// Design. Pixels are independent: every kernel splits each image into blocks of P pixels (a staging tile, see
// pixel_entropy.h) and gives each block to one thread, so outputs are bit-identical for any thread count. Per
// chunk of 8 pixels of a tile, pixel_stats gives the sample's entropy and its probabilities p_c = e^{z_c - m} / s
// (or x_c / P).
//   bald_stacked:  for a block, loops over the T samples, staging each and accumulating sum_t p_t in a second
//                  [C, P] tile and sum_t H[p_t] in a row, then finishes the block; sum_t p_t never goes to
//                  memory and the input is read once, in contiguous runs of P pixels per class.
//   bald_update:   one sample: writes p over the staged tile, then adds it to sum_p class by class (contiguous
//                  runs again), and H[p] to sum_h.
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

template <bool kFromLogits, class T>
int stacked(const BaldStackedArgs& a, const T* x) {
  const int64_t T_ = a.T, B = a.B, C = a.C, plane = a.H * a.W;
  const int64_t P = tile_pixels(C);
  const int nt = a.nthreads;
  Buffer<float> tiles(nt * (2 * C + 1) * P);  // per thread: staged sample [C, P], sum_t p [C, P], sum_t H [P]
  Buffer<vf> scratch(nt * C);
  const vf inv_t = splat(1.0f / static_cast<float>(T_));

  return for_each_block(B, plane, P, nt, [&](int tid, int64_t b, int64_t begin, int64_t n) {
    float* tile = tiles.get() + tid * (2 * C + 1) * P;
    float* acc = tile + C * P;
    float* acc_h = acc + C * P;
    vf* e = scratch.get() + tid * C;
    for (int64_t i = 0; i < (C + 1) * P; ++i) acc[i] = 0.0f;
    int flags = 0;
    for (int64_t t = 0; t < T_; ++t) {
      stage(x + (t * B + b) * C * plane + begin, plane, C, n, tile, P);
      for_each_chunk(0, n, [&](int64_t i, auto chunk) {
        auto add = [&](int64_t c, vf p) { store(acc + c * P + i, load(acc + c * P + i) + p); };
        const PixelStats st = pixel_stats<kFromLogits, false>(TileReader{tile + i, P}, C, chunk.valid(), e, add);
        flags |= st.flags;
        store(acc_h + i, load(acc_h + i) + st.entropy);
      });
    }
    for_each_chunk(0, n, [&](int64_t i, auto chunk) {
      finish(TileReader{acc + i, P}, load(acc_h + i), C, inv_t, chunk, a.bald + b * plane + begin + i,
             a.entropy + b * plane + begin + i);
    });
    return flags;
  });
}

template <bool kFromLogits, class T>
int update(const BaldUpdateArgs& a, const T* x) {
  const int64_t C = a.C, plane = a.H * a.W;
  const int64_t P = tile_pixels(C);
  Buffer<float> tiles(a.nthreads * C * P);
  Buffer<vf> scratch(a.nthreads * C);
  return for_each_block(a.B, plane, P, a.nthreads, [&](int tid, int64_t b, int64_t begin, int64_t n) {
    float* tile = tiles.get() + tid * C * P;
    vf* e = scratch.get() + tid * C;
    float* sum_h = a.sum_h + b * plane + begin;
    stage(x + b * C * plane + begin, plane, C, n, tile, P);
    int flags = 0;
    for_each_chunk(0, n, [&](int64_t i, auto chunk) {
      auto overwrite = [&](int64_t c, vf p) { store(tile + c * P + i, p); };
      const PixelStats st = pixel_stats<kFromLogits, false>(TileReader{tile + i, P}, C, chunk.valid(), e, overwrite);
      flags |= st.flags;
      chunk.store(sum_h + i, a.first ? st.entropy : chunk.load(sum_h + i) + st.entropy);
    });
    for (int64_t c = 0; c < C; ++c) {
      if (c + kPrefetchRuns < C) prefetch_run<true>(a.sum_p + (b * C + c + kPrefetchRuns) * plane + begin, n);
      float* sum_p = a.sum_p + (b * C + c) * plane + begin;
      const float* p = tile + c * P;
      for_each_chunk(0, n, [&](int64_t i, auto chunk) {
        chunk.store(sum_p + i, a.first ? load(p + i) : chunk.load(sum_p + i) + load(p + i));
      });
    }
    return flags;
  });
}

}  // namespace

int bald_stacked(const BaldStackedArgs& args) {
  return with_dtype(args.dtype, args.x, [&](const auto* x) {
    return args.from_logits ? stacked<true>(args, x) : stacked<false>(args, x);
  });
}

int bald_update(const BaldUpdateArgs& args) {
  return with_dtype(args.dtype, args.x, [&](const auto* x) {
    return args.from_logits ? update<true>(args, x) : update<false>(args, x);
  });
}

void bald_finalize(const BaldFinalizeArgs& a) {
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
