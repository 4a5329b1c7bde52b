// kl_histogram on CUDA: row i of the output is the normalised histogram of KL(p_i || q_j) over all rows j of q,
// without the M x N matrix. Contract: fastral/ops/kl_histogram.py (reference_kl_histogram is the definition).
//
// Design
//   prepare   one thread per row: floor at eps and normalise (scipy.stats.entropy's view of a row); P^T [C][M'] with
//             a_i = sum_c P_ic log P_ic, and log(Q)^T [C][N'], transposed and zero-padded to the tile sizes so that
//             tile loads need no bounds checks.
//   tiles     KL_ij = max(a_i - sum_c P_ic log Q_jc, 0): a skinny GEMM (K = C) fused with what consumes it. A block
//             owns NT rows, one per thread (its P column in shared memory, read conflict-free), and a range of
//             columns. It streams log(Q)^T through shared memory in tiles of 32 columns x C classes (cp.async,
//             double-buffered); all lanes read the same tile words (broadcasts), so a thread does 32 FMA per class
//             for 9 shared loads. With a tile's 32 KL values in registers the kernel either
//               pass 1 (adaptive range only): folds them into the row's min and max, or
//               pass 2: bins them with numpy's rule (the index from (v - lo) * (bins / (hi - lo)), then moved by
//               one where it disagrees with the float32 edges lo + i * width, the last edge being hi; an equal min
//               and max put every value in bin bins // 2) and counts them in the thread's private histogram, laid
//               out [bin][thread] in shared memory: bank = lane, so no conflicts and no contention (the atomic
//               only avoids a read-after-write chain between consecutive values).
//             Column ranges are split over blocks so the grid is ~4 waves deep. At its end a block adds its
//             histograms (int32) and its min/max (ordered-int keys) to global memory with atomics, once per row:
//             integers, so the result is deterministic.
//   finalize  out = counts / n_kept (n_kept = N, or N - 1 with exclude_self).
// Cost (M = 25,600, N = 335,000, C = 20): 172 G FMA per pass, ~6-7 ms on an H100's CUDA cores at ~80% issue
// efficiency; binning ~20 instructions per value, ~6 ms; log(Q)^T (27 MB) is read from L2 once per block of 256
// rows, ~2.7 GB per pass. Expected ~20 ms for both passes.
// Limits
//   Shared memory holds C x NT floats of P, 2 x C x 32 of log Q and bins x NT ints: the block size NT shrinks
//   (256 ... 32) to fit, and with too many bins for that the histograms move to global memory (global atomics,
//   slower). C up to ~1,700 on an H100. Inputs float32 (the launcher converts).
#include <cuda_pipeline_primitives.h>

#include "common.cuh"

namespace fastral_cuda {
namespace {

constexpr int kMaxThreads = 256;  // rows per block at most; row padding is a multiple of it
constexpr int kTileCols = 32;      // columns of log(Q)^T per tile
constexpr int kTileChunks = kTileCols / 4;  // 16-byte chunks per class row of a tile
constexpr int kWaves = 4;          // blocks per resident block slot, for load balance

enum Pass { kMinMax, kHistogram };

// Where the workspace keeps what: offsets in bytes, 256-aligned.
struct Workspace {
  std::int64_t m_pad, n_pad;
  std::size_t pt, lt, self, counts, keys, bytes;
};

Workspace workspace_layout(std::int64_t M, std::int64_t N, std::int64_t C, std::int64_t bins) {
  Workspace w{};
  w.m_pad = ceil_div(M, kMaxThreads) * kMaxThreads;
  w.n_pad = ceil_div(N, kTileCols) * kTileCols;
  auto take = [&](std::size_t bytes) {
    const std::size_t at = w.bytes;
    w.bytes += (bytes + 255) / 256 * 256;
    return at;
  };
  w.pt = take(sizeof(float) * C * w.m_pad);
  w.lt = take(sizeof(float) * C * w.n_pad);
  w.self = take(sizeof(float) * w.m_pad);
  w.counts = take(sizeof(int) * M * bins);
  w.keys = take(sizeof(int) * 2 * M);
  return w;
}

// Rows of src [rows, C] floored at eps and normalised, written transposed to dst [C][rows_pad] (zeros in the
// padding): the values themselves with self[i] = sum_c P_ic log P_ic (take_log false, for p), or their logs (for q).
// For p it also resets the min/max keys of the adaptive range.
__global__ void kl_prepare_kernel(const float* __restrict__ src, std::int64_t rows, std::int64_t rows_pad, int C,
                                  float eps, bool take_log, float* __restrict__ dst, float* __restrict__ self,
                                  int* __restrict__ keys) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows_pad) return;
  if (i >= rows) {
    for (int c = 0; c < C; ++c) dst[c * rows_pad + i] = 0.f;
    if (self) self[i] = 0.f;
    return;
  }
  const float* row = src + i * C;
  float sum = 0.f;
  for (int c = 0; c < C; ++c) sum += fmaxf(row[c], eps);
  float plogp = 0.f;
  for (int c = 0; c < C; ++c) {
    const float v = fmaxf(row[c], eps) / sum;
    const float log_v = logf(v);
    dst[c * rows_pad + i] = take_log ? log_v : v;
    plogp += v * log_v;
  }
  if (self) self[i] = plogp;
  if (keys) keys[i] = ordered_key(INFINITY), keys[rows + i] = ordered_key(-INFINITY);
}

// numpy's bin of a value for `bins` equal bins on [lo, hi], the last one closed.
struct Binning {
  float lo, hi, width, scale;
  int bins;
  bool middle;  // adaptive range with min == max: numpy widens it by +-0.5, which puts every value in bins // 2

  __device__ Binning(float lo_, float hi_, int bins_, bool adaptive) : lo(lo_), hi(hi_), bins(bins_) {
    middle = adaptive && lo == hi;
    width = (hi - lo) / bins;
    scale = bins / (hi - lo);
  }
  __device__ __forceinline__ float edge(int i) const {  // as torch computes it: lo + i * width, both rounded
    return i == bins ? hi : __fadd_rn(lo, __fmul_rn(static_cast<float>(i), width));
  }
  __device__ __forceinline__ int operator()(float v) const {  // -1 outside [lo, hi]
    if (!(v >= lo && v <= hi)) return -1;
    if (middle) return bins / 2;
    // v - lo is exact for v near lo (where one FMA v * scale - lo * scale could be off by many bins), then the
    // guess is within one of the bin whose edges hold v.
    int i = static_cast<int>(fminf(floorf(__fmul_rn(v - lo, scale)), static_cast<float>(bins - 1)));
    if (v < edge(i)) {
      --i;
    } else if (i != bins - 1 && v >= edge(i + 1)) {
      ++i;
    }
    return i;
  }
};

struct TileArgs {
  const float* pt;    // [C][m_pad]: normalised p, transposed
  const float* lt;    // [C][n_pad]: log of normalised q, transposed
  const float* self;  // [m_pad]: sum_c P_ic log P_ic
  std::int64_t m, n, m_pad, n_pad;
  int C, bins;
  std::int64_t tiles_per_block;  // column tiles of each blockIdx.y
  bool exclude_self, adaptive;
  float lo, hi;  // the fixed range (adaptive: from keys)
  int* keys;     // [2][m]: ordered-int min and max of each row (pass 1 writes, pass 2 reads)
  int* counts;   // [m][bins]
};

template <int kPass, bool kSharedHist>
__global__ void __launch_bounds__(kMaxThreads) kl_tiles_kernel(const TileArgs a) {
  const int threads = blockDim.x, tid = threadIdx.x;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * threads + tid;  // this thread's row
  const bool row_valid = i < a.m;
  float* p_col = dynamic_smem<float>();                 // [C][threads]
  float* tiles = p_col + a.C * threads;                 // [2][C][kTileCols]
  int* hist = reinterpret_cast<int*>(tiles + 2 * a.C * kTileCols) + tid;  // [bins][threads] (kSharedHist)

  for (int c = 0; c < a.C; ++c) p_col[c * threads + tid] = a.pt[c * a.m_pad + i];
  if constexpr (kPass == kHistogram && kSharedHist) {
    for (int b = 0; b < a.bins; ++b) hist[b * threads] = 0;
  }
  const float self = a.self[i];
  float lo = a.lo, hi = a.hi;
  if (kPass == kHistogram && a.adaptive && row_valid) {
    lo = from_ordered_key(a.keys[i]);
    hi = from_ordered_key(a.keys[a.m + i]);
  }
  const Binning bin(lo, hi, a.bins, a.adaptive);
  float row_min = INFINITY, row_max = -INFINITY;

  const std::int64_t n_tiles = a.n_pad / kTileCols;
  const std::int64_t t_begin = blockIdx.y * a.tiles_per_block;
  const std::int64_t t_end = min(t_begin + a.tiles_per_block, n_tiles);
  const auto fetch = [&](std::int64_t t, int buf) {  // tile t of log(Q)^T into buffer buf
    float* dst = tiles + buf * a.C * kTileCols;
    for (int k = tid; k < a.C * kTileChunks; k += threads) {
      const int c = k / kTileChunks, part = k % kTileChunks;
      __pipeline_memcpy_async(dst + c * kTileCols + 4 * part, a.lt + c * a.n_pad + t * kTileCols + 4 * part, 16);
    }
    __pipeline_commit();
  };
  if (t_begin < t_end) fetch(t_begin, 0);

  for (std::int64_t t = t_begin; t < t_end; ++t) {
    const int buf = static_cast<int>(t - t_begin) & 1;
    if (t + 1 < t_end) {
      fetch(t + 1, buf ^ 1);  // buffer buf ^ 1 was released by the barrier ending the previous tile
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();  // everyone's part of tile t has landed

    float acc[kTileCols] = {};
    const float4* tile = reinterpret_cast<const float4*>(tiles + buf * a.C * kTileCols);
#pragma unroll 2
    for (int c = 0; c < a.C; ++c) {
      const float p = p_col[c * threads + tid];
#pragma unroll
      for (int q = 0; q < kTileChunks; ++q) {
        const float4 l = tile[c * kTileChunks + q];  // the same word for every lane: a broadcast
        acc[4 * q] = fmaf(p, l.x, acc[4 * q]);
        acc[4 * q + 1] = fmaf(p, l.y, acc[4 * q + 1]);
        acc[4 * q + 2] = fmaf(p, l.z, acc[4 * q + 2]);
        acc[4 * q + 3] = fmaf(p, l.w, acc[4 * q + 3]);
      }
    }

    if (row_valid) {
      // Columns j = t * 32 + q count if j < n and, with exclude_self, j != i.
      const std::int64_t j0 = t * kTileCols;
      const int limit = static_cast<int>(min(a.n - j0, static_cast<std::int64_t>(kTileCols)));
      const int skip = a.exclude_self && i >= j0 && i < j0 + kTileCols ? static_cast<int>(i - j0) : -1;
#pragma unroll
      for (int q = 0; q < kTileCols; ++q) {
        if (q >= limit || q == skip) continue;
        const float v = fmaxf(self - acc[q], 0.f);
        if constexpr (kPass == kMinMax) {
          row_min = fminf(row_min, v), row_max = fmaxf(row_max, v);
        } else {
          const int b = bin(v);
          if (b < 0) continue;
          if constexpr (kSharedHist) {
            atomicAdd(&hist[b * threads], 1);
          } else {
            atomicAdd(&a.counts[i * a.bins + b], 1);
          }
        }
      }
    }
    __syncthreads();  // all lanes are done with buffer buf before the next fetch reuses it
  }

  if (!row_valid) return;
  if constexpr (kPass == kMinMax) {
    if (row_min <= row_max) {
      atomicMin(&a.keys[i], ordered_key(row_min));
      atomicMax(&a.keys[a.m + i], ordered_key(row_max));
    }
  } else if constexpr (kSharedHist) {
    for (int b = 0; b < a.bins; ++b) {
      const int n = hist[b * threads];
      if (n) atomicAdd(&a.counts[i * a.bins + b], n);
    }
  }
}

__global__ void kl_finalize_kernel(const int* __restrict__ counts, std::int64_t size, float n_kept,
                                   float* __restrict__ out) {
  const std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < size) out[k] = n_kept > 0.f ? static_cast<float>(counts[k]) / n_kept : static_cast<float>(counts[k]);
}

template <int kPass, bool kSharedHist>
void launch_tiles(TileArgs a, const Context& ctx) {
  const auto kernel = kl_tiles_kernel<kPass, kSharedHist>;
  const auto smem = [&](int threads) {
    return sizeof(float) * (static_cast<std::size_t>(a.C) * threads + 2 * a.C * kTileCols) +
           (kSharedHist ? sizeof(int) * static_cast<std::size_t>(a.bins) * threads : 0);
  };
  const BlockSize block = pick_block_size(kernel, smem, ctx);
  const int threads = block.threads;
  if (threads == 0) throw std::logic_error("fastral._C_cuda.kl_histogram: no block size fits shared memory");
  const std::int64_t row_blocks = a.m_pad / threads;
  const std::int64_t n_tiles = a.n_pad / kTileCols;
  const std::int64_t want = ceil_div(static_cast<std::int64_t>(kWaves) * block.resident_blocks * ctx.sms, row_blocks);
  const std::int64_t splits = std::min<std::int64_t>({std::max<std::int64_t>(want, 1), n_tiles, 65535});
  a.tiles_per_block = ceil_div(n_tiles, splits);
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(ceil_div(n_tiles, a.tiles_per_block)));
  kernel<<<grid, threads, smem(threads), ctx.stream>>>(a);
  FASTRAL_CUDA_CHECK_LAUNCH("kl_tiles_kernel");
}

// Pass 2: shared-memory histograms where some block size fits them, else global ones.
void histogram_pass(const TileArgs& a, const Context& ctx) {
  const std::size_t shared_hist_bytes =
      sizeof(float) * (static_cast<std::size_t>(a.C) * 32 + 2 * a.C * kTileCols) + sizeof(int) * a.bins * 32;
  if (shared_hist_bytes <= ctx.smem_optin) {
    launch_tiles<kHistogram, true>(a, ctx);
  } else {
    launch_tiles<kHistogram, false>(a, ctx);
  }
}

}  // namespace

std::size_t kl_histogram_workspace_bytes(std::int64_t M, std::int64_t N, std::int64_t C, std::int64_t bins) {
  return workspace_layout(M, N, C, bins).bytes;
}

void kl_histogram(const KlHistogramArgs& args, Ptr workspace, std::size_t workspace_bytes, const Stream& stream) {
  const Ptr p = address(args.p), q = address(args.q), out = address(args.out);
  const std::int64_t M = args.M, N = args.N, C = args.C, bins = args.bins;
  const bool adaptive = args.adaptive, exclude_self = args.exclude_self;
  const double lo = args.lo, hi = args.hi, eps = args.eps;
  const Context ctx = make_context(stream);
  if (N == 0) {  // nothing to compare against: every histogram is 0 (as on the CPU)
    FASTRAL_CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(out), 0, sizeof(float) * M * bins, ctx.stream));
    return;
  }
  const Workspace w = workspace_layout(M, N, C, bins);
  if (workspace_bytes < w.bytes) {
    throw std::invalid_argument("fastral._C_cuda.kl_histogram: the workspace has " + std::to_string(workspace_bytes) +
                                " bytes, kl_histogram_workspace_bytes() asks for " + std::to_string(w.bytes));
  }
  const std::size_t min_smem = sizeof(float) * static_cast<std::size_t>(C) * (32 + 2 * kTileCols);
  if (min_smem > ctx.smem_optin) {
    throw std::invalid_argument("fastral._C_cuda.kl_histogram: " + std::to_string(C) +
                                " classes do not fit in shared memory (the CUDA backend supports up to " +
                                std::to_string(ctx.smem_optin / (sizeof(float) * (32 + 2 * kTileCols))) +
                                " classes here)");
  }
  const auto at = [&](std::size_t offset) { return reinterpret_cast<float*>(workspace + offset); };
  float *pt = at(w.pt), *lt = at(w.lt), *self = at(w.self);
  TileArgs a{};
  a.pt = pt, a.lt = lt, a.self = self;
  a.m = M, a.n = N, a.m_pad = w.m_pad, a.n_pad = w.n_pad;
  a.C = static_cast<int>(C), a.bins = static_cast<int>(bins);
  a.exclude_self = exclude_self, a.adaptive = adaptive;
  a.lo = static_cast<float>(lo), a.hi = static_cast<float>(hi);
  a.keys = reinterpret_cast<int*>(workspace + w.keys);
  a.counts = reinterpret_cast<int*>(workspace + w.counts);

  const int prep_threads = 256;
  kl_prepare_kernel<<<static_cast<unsigned>(ceil_div(w.m_pad, prep_threads)), prep_threads, 0, ctx.stream>>>(
      reinterpret_cast<const float*>(p), M, w.m_pad, a.C, static_cast<float>(eps), false, pt, self,
      adaptive ? a.keys : nullptr);
  FASTRAL_CUDA_CHECK_LAUNCH("kl_prepare_kernel");
  kl_prepare_kernel<<<static_cast<unsigned>(ceil_div(w.n_pad, prep_threads)), prep_threads, 0, ctx.stream>>>(
      reinterpret_cast<const float*>(q), N, w.n_pad, a.C, static_cast<float>(eps), true, lt, nullptr, nullptr);
  FASTRAL_CUDA_CHECK_LAUNCH("kl_prepare_kernel");
  FASTRAL_CUDA_CHECK(cudaMemsetAsync(a.counts, 0, sizeof(int) * M * bins, ctx.stream));

  if (adaptive) launch_tiles<kMinMax, false>(a, ctx);
  histogram_pass(a, ctx);

  const std::int64_t size = M * bins;
  const float n_kept = static_cast<float>(exclude_self ? N - 1 : N);
  kl_finalize_kernel<<<static_cast<unsigned>(ceil_div(size, 256)), 256, 0, ctx.stream>>>(
      a.counts, size, n_kept, reinterpret_cast<float*>(out));
  FASTRAL_CUDA_CHECK_LAUNCH("kl_finalize_kernel");
}

}  // namespace fastral_cuda
