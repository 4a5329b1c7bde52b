// MC-dropout BALD on the CPU: BALD = H[mean_t p_t] - mean_t H[p_t] per pixel, from T stacked samples or streamed
// one sample at a time (contract: fastral/ops/bald.py, reference_bald and BaldAccumulator).
//
// Design. Pixels are independent, so every kernel splits the pixels of each image into fixed blocks and gives
// each block to one thread: outputs are bit-identical for any thread count. Per chunk of 8 pixels, pixel_stats
// (pixel_entropy.h) gives the sample's entropy and its probabilities p_c = e^{z_c - m} / s (or x_c / S).
//   bald_stacked:  for a block, loops over the T samples accumulating sum_t p_t (a [C, block] array sized to stay
//                  in L1) and sum_t H[p_t], then finishes the block; sum_t p_t never goes to memory. One pass over
//                  the input; the T * C planes are read in block-sized contiguous runs.
//   bald_update:   one sample: sum_p (+)= p, sum_h (+)= H[p], streaming over the three arrays.
//   bald_finalize: entropy = H[sum_p / T] (0 log 0 = 0), bald = entropy - sum_h / T; the last step of
//                  bald_stacked too (finish()).
#include <omp.h>

#include "pixel_entropy.h"

namespace fastral {
FASTRAL_DECLARE_CPU_KERNELS(FASTRAL_ISA)
namespace FASTRAL_ISA {
namespace {

constexpr int64_t kBlock = 1024;        // pixels per work item of the streaming kernels
constexpr int64_t kStackedFloats = 4096;  // bald_stacked: floats of sum_t p_t per block (16 KB, half of L1)

// Writes entropy and BALD of a chunk from its summed probabilities and entropies over T samples.
template <class Reader, class ChunkT>
FASTRAL_INLINE void finish(const Reader& sum_p, vf sum_h, int64_t C, vf inv_t, ChunkT chunk, float* bald,
                           float* entropy) {
  vf ent = entropy_of_mean(sum_p, C, inv_t);
  chunk.store(entropy, ent);
  chunk.store(bald, ent - sum_h * inv_t);
}

// Calls f(b, begin, end) for fixed blocks of at most `block` pixels of each of B images, in parallel.
template <class F>
int for_each_block(int64_t B, int64_t plane, int64_t block, int nthreads, F&& f) {
  const int64_t per_image = (plane + block - 1) / block;
  int flags = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(| : flags)
  for (int64_t item = 0; item < B * per_image; ++item) {
    const int64_t b = item / per_image, begin = (item % per_image) * block;
    flags |= f(b, begin, min_(begin + block, plane));
  }
  return flags;
}

template <bool kFromLogits, class T>
int stacked(const BaldStackedArgs& a, const T* x) {
  const int64_t T_ = a.T, B = a.B, C = a.C, plane = a.H * a.W;
  const int64_t block = max_<int64_t>(kLanes, min_<int64_t>(512, kStackedFloats / C / kLanes * kLanes));
  const int nt = a.nthreads;
  Buffer<float> acc_all(nt * (C + 1) * block);
  Buffer<vf> scratch_all(nt * C);
  const vf inv_t = splat(1.0f / static_cast<float>(T_));

  return for_each_block(B, plane, block, nt, [&](int64_t b, int64_t begin, int64_t end) {
    float* acc = acc_all.get() + omp_get_thread_num() * (C + 1) * block;  // [C + 1, block]: sum_t p, sum_t H
    float* acc_h = acc + C * block;
    vf* e = scratch_all.get() + omp_get_thread_num() * C;
    for (int64_t i = 0; i < (C + 1) * block; ++i) acc[i] = 0.0f;
    int flags = 0;
    for (int64_t t = 0; t < T_; ++t) {
      const T* xt = x + (t * B + b) * C * plane;
      for_each_chunk(begin, end, [&](int64_t i, auto chunk) {
        float* acc_i = acc + (i - begin);
        auto reader = class_reader(xt + i, plane, chunk);
        auto add = [&](int64_t c, vf p) { store(acc_i + c * block, load(acc_i + c * block) + p); };
        PixelStats st = pixel_stats<kFromLogits, false>(reader, C, e, add);
        flags |= chunk_flags<kFromLogits>(st, chunk.valid(), reader, C);
        store(acc_h + (i - begin), load(acc_h + (i - begin)) + st.entropy);
      });
    }
    for_each_chunk(begin, end, [&](int64_t i, auto chunk) {
      const float* acc_i = acc + (i - begin);
      finish(class_reader(acc_i, block, Chunk<true>{kLanes}), load(acc_h + (i - begin)), C, inv_t, chunk,
             a.bald + b * plane + i, a.entropy + b * plane + i);
    });
    return flags;
  });
}

template <bool kFromLogits, class T>
int update(const BaldUpdateArgs& a, const T* x) {
  const int64_t C = a.C, plane = a.H * a.W;
  Buffer<vf> scratch_all(a.nthreads * C);
  return for_each_block(a.B, plane, kBlock, a.nthreads, [&](int64_t b, int64_t begin, int64_t end) {
    vf* e = scratch_all.get() + omp_get_thread_num() * C;
    int flags = 0;
    for_each_chunk(begin, end, [&](int64_t i, auto chunk) {
      float* sum_p = a.sum_p + b * C * plane + i;
      float* sum_h = a.sum_h + b * plane + i;
      auto reader = class_reader(x + b * C * plane + i, plane, chunk);
      auto add = [&](int64_t c, vf p) {
        float* dst = sum_p + c * plane;
        chunk.store(dst, a.first ? p : chunk.load(dst) + p);
      };
      PixelStats st = pixel_stats<kFromLogits, false>(reader, C, e, add);
      flags |= chunk_flags<kFromLogits>(st, chunk.valid(), reader, C);
      chunk.store(sum_h, a.first ? st.entropy : chunk.load(sum_h) + st.entropy);
    });
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
  const vf inv_t = splat(1.0f / static_cast<float>(a.T));
  for_each_block(a.B, plane, kBlock, a.nthreads, [&](int64_t b, int64_t begin, int64_t end) {
    for_each_chunk(begin, end, [&](int64_t i, auto chunk) {
      finish(class_reader(a.sum_p + b * C * plane + i, plane, chunk), chunk.load(a.sum_h + b * plane + i), C,
             inv_t, chunk, a.bald + b * plane + i, a.entropy + b * plane + i);
    });
    return 0;
  });
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
