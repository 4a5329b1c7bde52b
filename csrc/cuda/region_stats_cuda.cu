// region_stats on CUDA: per-region argmax class counts and min/mean/max pixel-entropy pooling, one pass over the
// scores [B, C, H, W]. Contract: fastral/ops/region_stats.py (reference_region_stats is the definition).
//
// Design
//   One block per region. The region's rows are cut into chunks of V = 16 / sizeof(T) consecutive pixels (4
//   float32 or 8 float16/bfloat16 scores); thread k takes chunks k, k + blockDim, ... For each class a chunk is one
//   16-byte streaming load along W (a warp reads 512 contiguous bytes per class), and each score goes once through
//   PixelEntropy (one exp per score, one log per pixel), which also gives the argmax. Nothing is re-read.
//   Every statistic is reduced with integer shared-memory atomics, so the result does not depend on thread timing:
//     class counts: a thread keeps a run (label, count) and adds it when the label changes;
//     pooling windows: a thread keeps a run (window, min, max, sum, count) over consecutive pixels of one window
//       and merges it when the window changes (about every 8 pixels for 16x16 windows): min/max as ordered-int
//       keys, sums in 64-bit fixed point (units of 2^-k, k chosen so that a whole region cannot overflow: exact
//       to ~1e-10 and order-independent);
//     region mean: each thread's float sum, in the same fixed point.
//   The window statistics live in shared memory for a band of window rows at a time: all of them for usual pools
//   (8x8 windows: 1.3 KiB), fewer rows when a pool is very fine, so any pool fits.
//   Ignored pixels and pixels outside the region grid count nowhere and raise no flag. Chunks whose pixels are all
//   ignored are not loaded; a partly ignored chunk is still one 16-byte load (in bounds), its ignored lanes unused.
// Limits
//   Scores must be C-contiguous; the 16-byte path needs x 16-byte aligned, W and rw multiples of V and the mask
//   V-byte aligned, else the same kernel uses element loads. One block per region, so fewer regions than about
//   4 x the multiprocessor count leave the GPU partly idle (Cityscapes, 8 frames: 1024 regions, fine; splitting a
//   region over blocks would need a second reduction stage). The classes' counters need 4 C bytes of shared memory.
// Tuning
//   256 threads (8 warps) per block for regions of >= 2048 chunks; smaller regions get smaller blocks. Each thread
//   loads 4 classes ahead (unroll 4) so that ~64 KiB per multiprocessor are in flight, enough to cover HBM latency.
#include "common.cuh"

namespace fastral_cuda {
namespace {

constexpr int kMaxThreads = 256;
constexpr std::size_t kSmemBudget = 48 * 1024;  // without the opt-in, so as not to cost occupancy

struct RegionGeometry {
  int C, W;
  std::int64_t plane;      // H * W
  int nx, per_image;       // regions per grid row, per image
  int rh, rw, ph, pw, kh, kw;
  int band_wrows;          // window rows whose statistics share memory at once
  int chunks_per_row;      // ceil(rw / V)
  float fixed_scale;       // entropy sums are kept as integers in units of 1 / fixed_scale
};

// Shared memory of a block: one band's window statistics, the region's totals and its class counts.
struct RegionSmem {
  unsigned long long *win_sum, *region_sum;
  int *win_lo, *win_hi, *win_n, *region_n, *class_n;

  __host__ __device__ static std::size_t bytes(int windows, int C) {
    return sizeof(unsigned long long) * (windows + 1) + sizeof(int) * (3 * windows + 1 + C);
  }
  __device__ explicit RegionSmem(int windows) {
    win_sum = dynamic_smem<unsigned long long>();
    region_sum = win_sum + windows;
    win_lo = reinterpret_cast<int*>(region_sum + 1);
    win_hi = win_lo + windows;
    win_n = win_hi + windows;
    region_n = win_n + windows;
    class_n = region_n + 1;
  }
};

__device__ __forceinline__ unsigned long long to_fixed(float v, float scale) {
  return static_cast<unsigned long long>(__float2ll_rn(v * scale));
}

// A thread's run of consecutive pixels in one pooling window (w = -1: a pixel in no window).
struct WindowRun {
  int w = -1, n = 0;
  float lo = 0.f, hi = 0.f, sum = 0.f;

  __device__ __forceinline__ void add(int window, float h, const RegionSmem& sm, float scale) {
    if (window != w) {
      flush(sm, scale);
      w = window, n = 0, lo = h, hi = h, sum = 0.f;
    }
    lo = fminf(lo, h), hi = fmaxf(hi, h), sum += h, ++n;
  }
  __device__ __forceinline__ void flush(const RegionSmem& sm, float scale) const {
    if (n == 0 || w < 0) return;
    atomicMin(&sm.win_lo[w], ordered_key(lo));
    atomicMax(&sm.win_hi[w], ordered_key(hi));
    atomicAdd(&sm.win_sum[w], to_fixed(sum, scale));
    atomicAdd(&sm.win_n[w], n);
  }
};

// A thread's run of consecutive pixels with the same argmax class.
struct LabelRun {
  int label = -1, n = 0;

  __device__ __forceinline__ void add(int l, const RegionSmem& sm) {
    if (l != label) {
      flush(sm);
      label = l, n = 0;
    }
    ++n;
  }
  __device__ __forceinline__ void flush(const RegionSmem& sm) const {
    if (n) atomicAdd(&sm.class_n[label], n);
  }
};

// Which of the V pixels at mask offset `off` count: in the region row (v < n) and not ignored.
template <int V>
__device__ __forceinline__ bool pixels_to_keep(const std::uint8_t* mask, std::int64_t off, int n, bool vec,
                                               bool (&keep)[V]) {
  if (vec) {
    static_assert(V == 4 || V == 8, "mask words are 4 or 8 bytes");
    using Word = std::conditional_t<V == 4, std::uint32_t, unsigned long long>;
    const Word word = mask ? __ldg(reinterpret_cast<const Word*>(mask + off)) : Word(0);
#pragma unroll
    for (int v = 0; v < V; ++v) keep[v] = ((word >> (8 * v)) & 0xff) == 0;
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) keep[v] = v < n && !(mask && mask[off + v]);
  }
  bool any = false;
#pragma unroll
  for (int v = 0; v < V; ++v) any |= keep[v];
  return any;
}

template <class T, bool kLogits>
__global__ void __launch_bounds__(kMaxThreads)
    region_stats_kernel(const T* __restrict__ x,              // [B, C, H, W]
                        const std::uint8_t* __restrict__ mask,  // [B, H, W] (1 = ignore) or null
                        const RegionGeometry g, bool vec,  // vec: 16-byte loads (see load_raw)
                        int* __restrict__ counts,               // [R, C]
                        float* __restrict__ pool,               // [R, 3, ph, pw]
                        float* __restrict__ mean,               // [R]
                        int* __restrict__ flags) {
  constexpr int V = kVecWidth<T>;
  const RegionSmem sm(g.band_wrows * g.pw);
  const int r = blockIdx.x;
  const int b = r / g.per_image, in_image = r % g.per_image;
  const std::int64_t origin =  // the region's top-left pixel within its image plane
      static_cast<std::int64_t>(in_image / g.nx) * g.rh * g.W + static_cast<std::int64_t>(in_image % g.nx) * g.rw;
  const T* xr = x + static_cast<std::int64_t>(b) * g.C * g.plane + origin;
  const std::uint8_t* mr = mask ? mask + b * g.plane + origin : nullptr;

  for (int c = threadIdx.x; c < g.C; c += blockDim.x) sm.class_n[c] = 0;
  if (threadIdx.x == 0) *sm.region_sum = 0, *sm.region_n = 0;
  int status = 0;
  LabelRun labels;
  float thread_sum = 0.f;
  int thread_n = 0;

  for (int wy0 = 0; wy0 < g.ph; wy0 += g.band_wrows) {
    const int band_wrows = min(g.band_wrows, g.ph - wy0);
    const int y_begin = wy0 * g.kh;
    const int y_end = wy0 + band_wrows == g.ph ? g.rh : (wy0 + band_wrows) * g.kh;  // the last band: trailing rows
    const int windows = band_wrows * g.pw;
    __syncthreads();  // the previous band's windows are written out
    for (int w = threadIdx.x; w < windows; w += blockDim.x) {
      sm.win_sum[w] = 0;
      sm.win_lo[w] = ordered_key(INFINITY);
      sm.win_hi[w] = ordered_key(-INFINITY);
      sm.win_n[w] = 0;
    }
    __syncthreads();

    WindowRun run;
    const int chunks = (y_end - y_begin) * g.chunks_per_row;
    for (int i = threadIdx.x; i < chunks; i += blockDim.x) {
      const int y = y_begin + i / g.chunks_per_row;
      const int x0 = (i % g.chunks_per_row) * V;
      const std::int64_t off = static_cast<std::int64_t>(y) * g.W + x0;
      bool keep[V];
      if (!pixels_to_keep<V>(mr, off, g.rw - x0, vec, keep)) continue;

      PixelEntropy<kLogits> px[V];
      {
        float z[V];
        load_pixels<T>(xr + off, keep, vec, z);
#pragma unroll
        for (int v = 0; v < V; ++v) px[v].first(z[v]);
      }
#pragma unroll 4
      for (int c = 1; c < g.C; ++c) {
        float z[V];
        load_pixels<T>(xr + c * g.plane + off, keep, vec, z);
#pragma unroll
        for (int v = 0; v < V; ++v) px[v].add(z[v], c);
      }

      // Window of each pixel: row band wy (or none below the pooled rows), column wx (or none right of them).
      const int wy = y < g.ph * g.kh ? y / g.kh - wy0 : -1;
      int wx = x0 / g.kw, wx_end = (wx + 1) * g.kw;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const int col = x0 + v;
        if (col >= wx_end) ++wx, wx_end += g.kw;
        if (!keep[v]) continue;
        const float h = px[v].entropy();
        status |= px[v].status();
        labels.add(px[v].argmax, sm);
        run.add(wy >= 0 && col < g.pw * g.kw ? wy * g.pw + wx : -1, h, sm, g.fixed_scale);
        thread_sum += h, ++thread_n;
      }
    }
    run.flush(sm, g.fixed_scale);
    __syncthreads();

    const int cells = g.ph * g.pw;
    float* out = pool + static_cast<std::int64_t>(r) * 3 * cells + wy0 * g.pw;
    for (int w = threadIdx.x; w < windows; w += blockDim.x) {
      const int n = sm.win_n[w];
      float lo = 0.f, avg = 0.f, hi = 0.f;  // an empty window gives 0
      if (n) {
        lo = from_ordered_key(sm.win_lo[w]);
        hi = from_ordered_key(sm.win_hi[w]);
        avg = static_cast<float>(static_cast<double>(static_cast<long long>(sm.win_sum[w])) / g.fixed_scale / n);
      }
      out[w] = lo, out[cells + w] = avg, out[2 * cells + w] = hi;
    }
  }

  labels.flush(sm);
  if (thread_n) {
    atomicAdd(sm.region_sum, to_fixed(thread_sum, g.fixed_scale));
    atomicAdd(sm.region_n, thread_n);
  }
  if (status) atomicOr(flags, status);
  __syncthreads();
  for (int c = threadIdx.x; c < g.C; c += blockDim.x) counts[static_cast<std::int64_t>(r) * g.C + c] = sm.class_n[c];
  if (threadIdx.x == 0) {
    const int n = *sm.region_n;
    mean[r] = n ? static_cast<float>(static_cast<double>(static_cast<long long>(*sm.region_sum)) / g.fixed_scale / n)
                : 0.f;
  }
}

}  // namespace

int region_stats(const RegionStatsArgs& a, Ptr flags, const Stream& stream) {
  const Ptr x = address(a.x), mask = address(a.mask);
  const Ptr counts = address(a.counts), entropy_pool = address(a.pool), entropy_mean = address(a.mean);
  const int dtype = static_cast<int>(a.dtype);
  const std::int64_t B = a.B, C = a.C, H = a.H, W = a.W, rh = a.rh, rw = a.rw, ph = a.ph, pw = a.pw;
  const bool from_logits = a.from_logits;
  const Context ctx = make_context(stream);
  const int V = 16 / dtype_size(dtype);
  const std::int64_t ny = H / rh, nx = W / rw;

  RegionGeometry g{};
  g.C = static_cast<int>(C), g.W = static_cast<int>(W), g.plane = H * W;
  g.nx = static_cast<int>(nx), g.per_image = static_cast<int>(ny * nx);
  g.rh = static_cast<int>(rh), g.rw = static_cast<int>(rw), g.ph = static_cast<int>(ph), g.pw = static_cast<int>(pw);
  g.kh = static_cast<int>(rh / ph), g.kw = static_cast<int>(rw / pw);
  g.chunks_per_row = static_cast<int>(ceil_div(rw, V));
  // Fixed point: a region's entropy sum (<= rh * rw * log C) times 2^k stays below 2^62.
  const double max_sum = static_cast<double>(rh) * static_cast<double>(rw) * (std::log(static_cast<double>(C)) + 1.0);
  g.fixed_scale = std::ldexp(1.0f, static_cast<int>(std::floor(62.0 - std::log2(max_sum))));

  // As many window rows per band as fit the budget (at least one: the opt-in limit then applies).
  const std::size_t fixed_bytes = RegionSmem::bytes(0, g.C);
  const std::size_t row_bytes = RegionSmem::bytes(g.pw, g.C) - fixed_bytes;
  const std::size_t fit = kSmemBudget > fixed_bytes ? (kSmemBudget - fixed_bytes) / row_bytes : 0;
  g.band_wrows = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(fit, g.ph)));
  const std::size_t smem = RegionSmem::bytes(g.band_wrows * g.pw, g.C);
  if (smem > ctx.smem_optin) {
    throw std::invalid_argument("fastral._C_cuda.region_stats: " + std::to_string(C) + " classes and " +
                                std::to_string(pw) + " pooling columns need " + std::to_string(smem) +
                                " bytes of shared memory per block; this GPU allows " +
                                std::to_string(ctx.smem_optin));
  }

  const std::int64_t chunks = rh * g.chunks_per_row;
  const int threads = static_cast<int>(std::min<std::int64_t>(kMaxThreads, ceil_div(chunks, 32) * 32));
  const bool vec = x % 16 == 0 && W % V == 0 && rw % V == 0 && mask % V == 0;
  const std::int64_t regions = B * ny * nx;

  clear_flags(reinterpret_cast<int*>(flags), ctx);
  dispatch(dtype, from_logits, [&](auto tag, auto logits) {
    using T = typename decltype(tag)::type;
    const auto kernel = region_stats_kernel<T, decltype(logits)::value>;
    allow_shared_memory(kernel, smem);
    kernel<<<static_cast<unsigned>(regions), threads, smem, ctx.stream>>>(
        reinterpret_cast<const T*>(x), reinterpret_cast<const std::uint8_t*>(mask), g, vec,
        reinterpret_cast<int*>(counts), reinterpret_cast<float*>(entropy_pool),
        reinterpret_cast<float*>(entropy_mean), reinterpret_cast<int*>(flags));
  });
  FASTRAL_CUDA_CHECK_LAUNCH("region_stats_kernel");
  return read_flags(reinterpret_cast<const int*>(flags), ctx);
}

}  // namespace fastral_cuda
