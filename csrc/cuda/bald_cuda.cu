// bald on CUDA: MC-dropout BALD = H[mean_t p_t] - mean_t H[p_t] per pixel, from T stacked samples [T, B, C, H, W]
// or streamed one sample at a time. Contract: fastral/ops/bald.py (reference_bald is the definition).
//
// Design
//   A thread owns V = 16 / sizeof(T) consecutive pixels of one image (H*W flattened) across all classes. For each
//   sample it stages its C x 16-byte slice of scores in its own shared-memory slots with asynchronous copies
//   (cp.async: all C loads in flight at once, no registers held; element loads where 16-byte copies cannot be
//   used) and then reads the slots twice: pass 1 feeds PixelEntropy (one exp per score; entropy, status and the
//   normaliser), pass 2 turns each score into its probability (one more exp) and adds it to sum_t p_t. Each score
//   is read from global memory once. No thread touches another's slots, so there are no barriers.
//     bald_stacked double-buffers the slots (sample t + 1's copies are in flight while sample t is computed) and
//     keeps sum_t p_t in shared memory as well (C x V floats per thread); it writes only the two maps;
//     bald_update keeps it in global memory (the streaming accumulator's state, read-modified-written per sample);
//     bald_finalize turns (sum_p, sum_h) into the maps.
//   Every output element is written by one thread after a fixed-order loop: deterministic.
//   Shared memory is laid out [class][thread] in 16-byte units, so a warp's accesses are conflict-free.
// Limits
//   Shared memory per thread: bald_stacked C * (32 + 4 V) bytes, bald_update 16 C bytes; the block size (256 ... 32
//   threads) is chosen to keep the most threads resident. Where bald_stacked cannot fit even 32 threads (C above
//   ~145 for float32, ~110 for 16-bit scores on an H100) it runs as bald_update per sample + bald_finalize through
//   a workspace of B (C + 1) H W floats (bald_stacked_workspace_bytes says how much); bald_update needs C <= ~450.
//   The 16-byte path needs H*W a multiple of V and 16-byte aligned arrays; otherwise element loads are used.
// Tuning
//   Per score ~2 exp + ~15 other instructions and 3 shared-memory accesses (stacked: 5): below the H100's HBM rate
//   for float32 scores (a float32 score costs 4 bytes = ~0.3 ns of HBM time per multiprocessor, against ~0.15 ns of
//   issue). Residency is bounded by shared memory, so small blocks (32-64 threads) usually win the choice.
#include <cuda_pipeline_primitives.h>

#include "common.cuh"

namespace fastral_cuda {
namespace {

constexpr int kMaxThreads = 256;

struct PixelSpan {  // a thread's V pixels: image b, first pixel p0 (flattened H*W), n of them in bounds
  int b;
  std::int64_t p0;
  int n;
};

template <int V>
__device__ __forceinline__ bool thread_pixels(std::int64_t HW, std::int64_t blocks_per_image, PixelSpan& s) {
  s.b = static_cast<int>(blockIdx.x / blocks_per_image);
  s.p0 = ((blockIdx.x % blocks_per_image) * blockDim.x + threadIdx.x) * V;
  s.n = static_cast<int>(min(static_cast<std::int64_t>(V), HW - s.p0));
  return s.n > 0;
}

// Copy the thread's scores of one sample (C classes, plane stride HW) into its slots (slot c at slots[c * stride]).
// vec: 16-byte asynchronous copies (see load_raw) in one batch, which __pipeline_wait_prior then waits for; no
// barrier is needed, as each thread reads only its own slots. Otherwise element loads, complete on return.
template <class T>
__device__ __forceinline__ void stage_sample(const T* src, std::int64_t HW, int C, int n, bool vec, uint4* slots,
                                             int stride) {
  if (vec) {
    for (int c = 0; c < C; ++c) __pipeline_memcpy_async(&slots[c * stride], src + c * HW, sizeof(uint4));
    __pipeline_commit();
  } else {
    bool need[kVecWidth<T>];
#pragma unroll
    for (int v = 0; v < kVecWidth<T>; ++v) need[v] = v < n;
    for (int c = 0; c < C; ++c) slots[c * stride] = load_raw<T>(src + c * HW, need, false);
  }
}

// Pass 1 over a staged sample: each pixel's entropy and normaliser; status bits of the n pixels in bounds.
template <class T, bool kLogits>
__device__ __forceinline__ void sample_stats(const uint4* slots, int stride, int C, int n, float (&h)[kVecWidth<T>],
                                             float (&norm)[kVecWidth<T>], int& status) {
  constexpr int V = kVecWidth<T>;
  PixelEntropy<kLogits> px[V];
  float z[V];
  unpack<T>(slots[0], z);
#pragma unroll
  for (int v = 0; v < V; ++v) px[v].first(z[v]);
  for (int c = 1; c < C; ++c) {
    unpack<T>(slots[c * stride], z);
#pragma unroll
    for (int v = 0; v < V; ++v) px[v].add(z[v], c);
  }
#pragma unroll
  for (int v = 0; v < V; ++v) {
    if (v < n) status |= px[v].status();
    h[v] = px[v].entropy();
    norm[v] = px[v].norm();
  }
}

// One class's term of H[mean_t p_t]: -q log q with q = sum_t p_t / T.
__device__ __forceinline__ float mean_entropy_term(float sum_p, float samples) { return -xlogx(sum_p / samples); }

template <class T, bool kLogits>
__global__ void __launch_bounds__(kMaxThreads)
    bald_stacked_kernel(const T* __restrict__ x,  // [T, B, C, H, W]
                        int samples, int B, int C, std::int64_t HW, std::int64_t blocks_per_image, bool vec,
                        float* __restrict__ bald,     // [B, H, W]
                        float* __restrict__ entropy,  // [B, H, W]
                        int* __restrict__ flags) {
  constexpr int V = kVecWidth<T>, Q = V / 4;  // Q float4 of sum_p per class
  PixelSpan px;
  if (!thread_pixels<V>(HW, blocks_per_image, px)) return;
  const int stride = blockDim.x;
  uint4* buffers = dynamic_smem<uint4>() + threadIdx.x;                                  // [2][C][threads]
  float4* sum_p = reinterpret_cast<float4*>(dynamic_smem<uint4>() + 2 * C * stride) + threadIdx.x;  // [C][Q][threads]
  const auto stage = [&](int t) {  // sample t into buffer t % 2
    stage_sample<T>(x + (static_cast<std::int64_t>(t) * B + px.b) * C * HW + px.p0, HW, C, px.n, vec,
                    buffers + (t & 1) * C * stride, stride);
  };

  float h_sum[V] = {};
  int status = 0;
  stage(0);
  for (int t = 0; t < samples; ++t) {
    if (t + 1 < samples) {
      stage(t + 1);  // its buffer was last read for sample t - 1, whose reads this thread has completed
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    const uint4* slots = buffers + (t & 1) * C * stride;
    float h[V], norm[V];
    sample_stats<T, kLogits>(slots, stride, C, px.n, h, norm, status);
#pragma unroll
    for (int v = 0; v < V; ++v) h_sum[v] += h[v];
    for (int c = 0; c < C; ++c) {
      float z[V];
      unpack<T>(slots[c * stride], z);
#pragma unroll
      for (int q = 0; q < Q; ++q) {
        float4 p = make_float4(PixelEntropy<kLogits>::prob(z[4 * q], norm[4 * q]),
                               PixelEntropy<kLogits>::prob(z[4 * q + 1], norm[4 * q + 1]),
                               PixelEntropy<kLogits>::prob(z[4 * q + 2], norm[4 * q + 2]),
                               PixelEntropy<kLogits>::prob(z[4 * q + 3], norm[4 * q + 3]));
        float4& acc = sum_p[(c * Q + q) * stride];
        if (t) p.x += acc.x, p.y += acc.y, p.z += acc.z, p.w += acc.w;
        acc = p;
      }
    }
  }

  float ent[V] = {}, bd[V];
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const float4 s = sum_p[(c * Q + q) * stride];
      ent[4 * q] += mean_entropy_term(s.x, samples);
      ent[4 * q + 1] += mean_entropy_term(s.y, samples);
      ent[4 * q + 2] += mean_entropy_term(s.z, samples);
      ent[4 * q + 3] += mean_entropy_term(s.w, samples);
    }
  }
#pragma unroll
  for (int v = 0; v < V; ++v) bd[v] = ent[v] - h_sum[v] / samples;
  const std::int64_t out = px.b * HW + px.p0;
  store_floats<V>(entropy + out, px.n, vec, ent);
  store_floats<V>(bald + out, px.n, vec, bd);
  if (status) atomicOr(flags, status);
}

template <class T, bool kLogits>
__global__ void __launch_bounds__(kMaxThreads)
    bald_update_kernel(const T* __restrict__ x,  // [B, C, H, W]: one sample
                       int C, std::int64_t HW, std::int64_t blocks_per_image, bool vec, bool first,
                       float* __restrict__ sum_p,  // [B, C, H, W]
                       float* __restrict__ sum_h,  // [B, H, W]
                       int* __restrict__ flags) {
  constexpr int V = kVecWidth<T>;
  PixelSpan px;
  if (!thread_pixels<V>(HW, blocks_per_image, px)) return;
  const int stride = blockDim.x;
  uint4* slots = dynamic_smem<uint4>() + threadIdx.x;  // [C][threads]

  stage_sample<T>(x + static_cast<std::int64_t>(px.b) * C * HW + px.p0, HW, C, px.n, vec, slots, stride);
  __pipeline_wait_prior(0);
  float h[V], norm[V];
  int status = 0;
  sample_stats<T, kLogits>(slots, stride, C, px.n, h, norm, status);

  const auto accumulate = [&](float* dst, float (&add)[V]) {
    if (!first) {
      float old[V];
      load_floats<V>(dst, px.n, vec, old);
#pragma unroll
      for (int v = 0; v < V; ++v) add[v] += old[v];
    }
    store_floats<V>(dst, px.n, vec, add);
  };
  accumulate(sum_h + px.b * HW + px.p0, h);
  for (int c = 0; c < C; ++c) {
    float z[V];
    unpack<T>(slots[c * stride], z);
#pragma unroll
    for (int v = 0; v < V; ++v) z[v] = PixelEntropy<kLogits>::prob(z[v], norm[v]);
    accumulate(sum_p + (static_cast<std::int64_t>(px.b) * C + c) * HW + px.p0, z);
  }
  if (status) atomicOr(flags, status);
}

__global__ void __launch_bounds__(kMaxThreads)
    bald_finalize_kernel(const float* __restrict__ sum_p,  // [B, C, H, W]
                         const float* __restrict__ sum_h,  // [B, H, W]
                         float samples, int C, std::int64_t HW, std::int64_t blocks_per_image, bool vec,
                         float* __restrict__ bald, float* __restrict__ entropy) {
  constexpr int V = 4;
  PixelSpan px;
  if (!thread_pixels<V>(HW, blocks_per_image, px)) return;
  float ent[V] = {}, bd[V];
  for (int c = 0; c < C; ++c) {
    float s[V];
    load_floats<V>(sum_p + (static_cast<std::int64_t>(px.b) * C + c) * HW + px.p0, px.n, vec, s);
#pragma unroll
    for (int v = 0; v < V; ++v) ent[v] += mean_entropy_term(s[v], samples);
  }
  const std::int64_t out = px.b * HW + px.p0;
  load_floats<V>(sum_h + out, px.n, vec, bd);
#pragma unroll
  for (int v = 0; v < V; ++v) bd[v] = ent[v] - bd[v] / samples;
  store_floats<V>(entropy + out, px.n, vec, ent);
  store_floats<V>(bald + out, px.n, vec, bd);
}

// Threads and blocks for a per-pixel kernel: `threads` per block, V pixels per thread.
struct PixelGrid {
  int threads;
  std::int64_t blocks_per_image, blocks;
};

PixelGrid pixel_grid(int threads, int V, std::int64_t B, std::int64_t HW) {
  const std::int64_t per_image = ceil_div(HW, static_cast<std::int64_t>(threads) * V);
  return {threads, per_image, per_image * B};
}

bool aligned16(std::initializer_list<Ptr> ptrs) {
  return std::all_of(ptrs.begin(), ptrs.end(), [](Ptr p) { return p % 16 == 0; });
}

std::size_t stacked_smem_per_thread(int dtype, std::int64_t C) {  // two sample buffers and sum_p
  return static_cast<std::size_t>(C) * (2 * 16 + 4 * (16 / dtype_size(dtype)));
}

// bald_stacked_kernel's block size for these scores, or 0 where even 32 threads do not fit.
int stacked_block_size(int dtype, std::int64_t C, const Context& ctx) {
  int threads = 0;
  dispatch(dtype, true, [&](auto tag, auto) {
    using T = typename decltype(tag)::type;  // both instances of a dtype need the same shared memory
    threads = pick_block_size(bald_stacked_kernel<T, true>,
                              [&](int nt) { return nt * stacked_smem_per_thread(dtype, C); }, ctx)
                  .threads;
  });
  return threads;
}

void update(const Context& ctx, Ptr x, int dtype, std::int64_t B, std::int64_t C, std::int64_t HW, bool from_logits,
           bool first, Ptr sum_p, Ptr sum_h, Ptr flags) {
  const int V = 16 / dtype_size(dtype);
  const bool vec = HW % V == 0 && aligned16({x, sum_p, sum_h});
  const std::size_t per_thread = 16 * static_cast<std::size_t>(C);
  dispatch(dtype, from_logits, [&](auto tag, auto logits) {
    using T = typename decltype(tag)::type;
    const auto kernel = bald_update_kernel<T, decltype(logits)::value>;
    const int threads = pick_block_size(kernel, [&](int nt) { return nt * per_thread; }, ctx).threads;
    if (threads == 0) {
      throw std::invalid_argument("fastral._C_cuda.bald: " + std::to_string(C) +
                                  " classes do not fit in shared memory (the CUDA backend supports up to " +
                                  std::to_string(ctx.smem_optin / (32 * 16)) + " classes here)");
    }
    const PixelGrid grid = pixel_grid(threads, V, B, HW);
    kernel<<<static_cast<unsigned>(grid.blocks), threads, threads * per_thread, ctx.stream>>>(
        reinterpret_cast<const T*>(x), static_cast<int>(C), HW, grid.blocks_per_image, vec, first,
        reinterpret_cast<float*>(sum_p), reinterpret_cast<float*>(sum_h), reinterpret_cast<int*>(flags));
  });
  FASTRAL_CUDA_CHECK_LAUNCH("bald_update_kernel");
}

void finalize(const Context& ctx, Ptr sum_p, Ptr sum_h, std::int64_t T, std::int64_t B, std::int64_t C,
              std::int64_t HW, Ptr bald, Ptr entropy) {
  const PixelGrid grid = pixel_grid(kMaxThreads, 4, B, HW);
  const bool vec = HW % 4 == 0 && aligned16({sum_p, sum_h, bald, entropy});
  bald_finalize_kernel<<<static_cast<unsigned>(grid.blocks), grid.threads, 0, ctx.stream>>>(
      reinterpret_cast<const float*>(sum_p), reinterpret_cast<const float*>(sum_h), static_cast<float>(T),
      static_cast<int>(C), HW, grid.blocks_per_image, vec, reinterpret_cast<float*>(bald),
      reinterpret_cast<float*>(entropy));
  FASTRAL_CUDA_CHECK_LAUNCH("bald_finalize_kernel");
}

}  // namespace

std::size_t bald_stacked_workspace_bytes(int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                         const Stream& stream) {
  const Context ctx = make_context(stream);
  if (stacked_block_size(dtype, C, ctx)) return 0;
  return sizeof(float) * static_cast<std::size_t>(B * (C + 1) * H * W);  // sum_p, then sum_h
}

int bald_stacked(const BaldStackedArgs& a, Ptr workspace, std::size_t workspace_bytes, Ptr flags,
                 const Stream& stream) {
  const Ptr x = address(a.x), bald = address(a.bald), entropy = address(a.entropy);
  const int dtype = static_cast<int>(a.dtype);
  const std::int64_t T = a.T, B = a.B, C = a.C, H = a.H, W = a.W;
  const bool from_logits = a.from_logits;
  const Context ctx = make_context(stream);
  const std::int64_t HW = H * W;
  const int V = 16 / dtype_size(dtype);
  int* flag_word = reinterpret_cast<int*>(flags);
  clear_flags(flag_word, ctx);
  const int threads = stacked_block_size(dtype, C, ctx);
  if (threads == 0) {  // too many classes for one pass: accumulate sample by sample in the workspace
    if (workspace_bytes < bald_stacked_workspace_bytes(dtype, B, C, H, W, stream) || workspace == 0) {
      throw std::invalid_argument("fastral._C_cuda.bald_stacked: " + std::to_string(C) +
                                  " classes need a workspace of bald_stacked_workspace_bytes() bytes");
    }
    const Ptr sum_p = workspace, sum_h = workspace + sizeof(float) * static_cast<std::size_t>(B * C * HW);
    const std::size_t sample = static_cast<std::size_t>(B * C * HW) * dtype_size(dtype);
    for (std::int64_t t = 0; t < T; ++t) update(ctx, x + t * sample, dtype, B, C, HW, from_logits, t == 0, sum_p, sum_h, flags);
    finalize(ctx, sum_p, sum_h, T, B, C, HW, bald, entropy);
    return read_flags(flag_word, ctx);
  }
  const bool vec = HW % V == 0 && aligned16({x, bald, entropy});
  const PixelGrid grid = pixel_grid(threads, V, B, HW);
  const std::size_t smem = threads * stacked_smem_per_thread(dtype, C);
  dispatch(dtype, from_logits, [&](auto tag, auto logits) {
    using Scalar = typename decltype(tag)::type;
    const auto kernel = bald_stacked_kernel<Scalar, decltype(logits)::value>;
    allow_shared_memory(kernel, smem);
    kernel<<<static_cast<unsigned>(grid.blocks), threads, smem, ctx.stream>>>(
        reinterpret_cast<const Scalar*>(x), static_cast<int>(T), static_cast<int>(B), static_cast<int>(C), HW,
        grid.blocks_per_image, vec, reinterpret_cast<float*>(bald), reinterpret_cast<float*>(entropy), flag_word);
  });
  FASTRAL_CUDA_CHECK_LAUNCH("bald_stacked_kernel");
  return read_flags(flag_word, ctx);
}

int bald_update(const BaldUpdateArgs& a, Ptr flags, const Stream& stream) {
  const Context ctx = make_context(stream);
  const int dtype = static_cast<int>(a.dtype);
  const std::int64_t HW = a.H * a.W;
  const std::size_t sample = static_cast<std::size_t>(a.B * a.C * HW) * dtype_size(dtype);
  clear_flags(reinterpret_cast<int*>(flags), ctx);
  for (std::int64_t t = 0; t < a.T; ++t) {  // one launch per sample, the flags read once at the end
    update(ctx, address(a.x) + t * sample, dtype, a.B, a.C, HW, a.from_logits, a.first && t == 0, address(a.sum_p),
           address(a.sum_h), flags);
  }
  return read_flags(reinterpret_cast<const int*>(flags), ctx);
}

void bald_finalize(const BaldFinalizeArgs& a, const Stream& stream) {
  const Context ctx = make_context(stream);
  finalize(ctx, address(a.sum_p), address(a.sum_h), a.T, a.B, a.C, a.H * a.W, address(a.bald), address(a.entropy));
}

}  // namespace fastral_cuda
