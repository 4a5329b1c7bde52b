// kl_histogram on the CPU: row i of the output is the normalised histogram of KL(p_i || q_j) over j, without the
// M x N matrix (contract: fastral/ops/kl_histogram.py, reference_kl_histogram).
//
// Design. KL(p_i || q_j) = sum_c p_ic log p_ic - sum_c p_ic log q_jc is a skinny GEMM (K = C, ~20) plus a row
// term. After flooring at eps and renormalising both sides, log q is packed in tiles of 16 columns ([C][16],
// 1.3 KB) and each thread owns panels of up to kPanelRows rows of p. A register-blocked micro-kernel computes a 6 x 16
// tile of dot products (12 accumulators, one FMA per class and accumulator); the tile is turned into KL values
// (clamped at 0) and handed straight to an epilogue, so KL values never reach memory:
//   adaptive range: a first sweep keeps each row's min and max, then a second sweep recomputes the tiles and bins
//                   them (the extra GEMM pass is about 28% of the kernel's instructions, and needs no buffer of
//                   rows x N values);
//   fixed range:    one binning sweep.
// The column tile is the outer loop, so a tile of log q stays in L1 while the panel's rows (also in L1) pass over
// it. Excluded pairs (j == i) and padding columns become NaN, which both epilogues skip. Binning follows
// np.histogram exactly (index from (v - lo) * bins / (hi - lo), moved by one where the float32 edges
// lo + i * (hi - lo) / bins disagree, last bin closed); the increments go to the panel's histograms, which stay in
// L1, interleaved across the 6 rows of a tile so that no two consecutive increments hit the same counter. Each
// row belongs to one thread and is computed the same way for any thread count: the output is bit-identical.
// Memory: O((M + N) C) for the normalised inputs and O(panel rows * bins) per thread, where a panel has up to
// kPanelRows rows but shrinks (to one tile of kTileRows rows at least) so that its histograms stay within
// kHistogramBudget bytes: bins = 10**6 keeps 6 rows (24 MB) per thread, not 96 (384 MB).
#include <math.h>
#include <omp.h>

#include "simd_math.h"

namespace fastral {
FASTRAL_DECLARE_CPU_KERNELS(FASTRAL_ISA)
namespace FASTRAL_ISA {
namespace {

constexpr int64_t kTileRows = 6, kTileCols = 2 * kLanes, kPanelRows = 16 * kTileRows;
constexpr int64_t kHistogramBudget = 4 << 20;  // bytes of int32 counters per thread before panels shrink

// Rows per panel: kPanelRows, or fewer (a multiple of kTileRows) when their counters would exceed the budget.
int64_t panel_rows_for(int64_t bins) {
  const int64_t fit = kHistogramBudget / (4 * (bins + 1)) / kTileRows * kTileRows;
  return fit < kTileRows ? kTileRows : (fit > kPanelRows ? kPanelRows : fit);
}

struct Tile {
  vf v[kTileRows][2];
};

// Dot products of 6 rows of p ([6][C], row-major) with a packed tile of 16 columns of log q ([C][16]).
FASTRAL_INLINE Tile dot_tile(const float* p, const float* lq, int64_t C) {
  Tile t;
#pragma GCC unroll 6
  for (int r = 0; r < kTileRows; ++r) t.v[r][0] = t.v[r][1] = splat(0.0f);
#pragma GCC unroll 4
  for (int64_t c = 0; c < C; ++c) {
    const vf l0 = load(lq + c * kTileCols), l1 = load(lq + c * kTileCols + kLanes);
#pragma GCC unroll 6
    for (int r = 0; r < kTileRows; ++r) {
      const vf pc = splat(p[r * C + c]);
      t.v[r][0] += pc * l0;
      t.v[r][1] += pc * l1;
    }
  }
  return t;
}

// The inputs after normalisation, padded to whole tiles.
struct Prepared {
  int64_t M, N, C;
  const float* p;        // [M rounded up to whole panels][C], rows floored at eps and normalised
  const float* entropy;  // [same rows]: sum_c p log p
  const float* lq;       // [N rounded up to kTileCols / kTileCols][C][kTileCols]: log of q, normalised likewise
  bool exclude_self;
};

// Calls epilogue(local_row, tile) with the KL values of every 6 x 16 tile of the panel of panel_rows rows starting
// at row0, tile after tile; pairs that do not count (j == i when excluding self, padding columns) are NaN.
template <class Epilogue>
void sweep(const Prepared& d, int64_t row0, int64_t panel_rows, Epilogue&& epilogue) {
  const int64_t col_tiles = (d.N + kTileCols - 1) / kTileCols;
  const vf nan = splat(__builtin_nanf(""));
  for (int64_t jt = 0; jt < col_tiles; ++jt) {
    const int64_t j0 = jt * kTileCols;
    const float* lq = d.lq + jt * d.C * kTileCols;
    for (int64_t r0 = 0; r0 < panel_rows; r0 += kTileRows) {
      const int64_t i0 = row0 + r0;
      Tile t = dot_tile(d.p + i0 * d.C, lq, d.C);
      const bool masked = j0 + kTileCols > d.N || (d.exclude_self && i0 < j0 + kTileCols && j0 < i0 + kTileRows);
#pragma GCC unroll 6
      for (int r = 0; r < kTileRows; ++r) {
        const vf h = splat(d.entropy[i0 + r]);
        for (int k = 0; k < 2; ++k) {
          vf kl = vmax(h - t.v[r][k], splat(0.0f));
          if (__builtin_expect(masked, 0)) {
            vi j = lane_index() + splat(static_cast<int32_t>(j0 + k * kLanes));
            vi skip = j >= splat(static_cast<int32_t>(d.N));
            if (d.exclude_self) skip |= j == splat(static_cast<int32_t>(i0 + r));
            kl = skip ? nan : kl;
          }
          t.v[r][k] = kl;
        }
      }
      epilogue(r0, t);
    }
  }
}

// Floors rows at eps and renormalises them (as reference's normalize_distributions), returning log(row) into
// `logs` at stride `log_stride` and sum_c x log x.
FASTRAL_INLINE float normalise_row(const float* in, int64_t C, float eps, float* out, float* logs,
                                   int64_t log_stride) {
  float sum = 0.0f;
  for (int64_t c = 0; c < C; ++c) sum += max_(in[c], eps);
  float xlogx = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const float v = max_(in[c], eps) / sum, lv = logf(v);
    if (out != nullptr) out[c] = v;
    logs[c * log_stride] = lv;
    xlogx += v * lv;
  }
  return xlogx;
}

}  // namespace

void kl_histogram(const Cpu<KlHistogramArgs>& a) {
  const int64_t M = a.M, N = a.N, C = a.C, bins = a.bins;
  const int64_t kept = a.exclude_self ? N - 1 : N;
  if (M == 0) return;
  if (kept <= 0) {
    for (int64_t i = 0; i < M * bins; ++i) a.out[i] = 0.0f;
    return;
  }
  const int nt = a.nthreads;
  const float eps = static_cast<float>(a.eps);
  const int64_t rows = panel_rows_for(bins);
  const int64_t panels = (M + rows - 1) / rows, M_pad = panels * rows;
  const int64_t col_tiles = (N + kTileCols - 1) / kTileCols;

  Buffer<float> p(M_pad * C), entropy(M_pad), lq(col_tiles * C * kTileCols), p_logs(nt * C);
  Buffer<int32_t> hist_all(nt * rows * (bins + 1));
  Buffer<vf> range_all(nt * 2 * kPanelRows);
  Buffer<float> edges_all(nt * 4 * kPanelRows);
  Buffer<bool> single_all(nt * kPanelRows);
  const Prepared d{M, N, C, p.get(), entropy.get(), lq.get(), a.exclude_self};

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < M_pad; ++i) {
      if (i < M) {
        entropy[i] = normalise_row(a.p + i * C, C, eps, p.get() + i * C, p_logs.get() + tid * C, 1);
      } else {
        for (int64_t c = 0; c < C; ++c) p[i * C + c] = 0.0f;
        entropy[i] = 0.0f;
      }
    }
#pragma omp for schedule(static)
    for (int64_t j = 0; j < col_tiles * kTileCols; ++j) {
      float* tile = lq.get() + (j / kTileCols) * C * kTileCols + j % kTileCols;
      if (j < N) {
        normalise_row(a.q + j * C, C, eps, nullptr, tile, kTileCols);
      } else {
        for (int64_t c = 0; c < C; ++c) tile[c * kTileCols] = 0.0f;
      }
    }

    int32_t* hist = hist_all.get() + tid * rows * (bins + 1);  // [rows][bins + 1]; bins = "not counted"
    vf* row_min = range_all.get() + tid * 2 * kPanelRows;
    vf* row_max = row_min + kPanelRows;
    float* lo = edges_all.get() + tid * 4 * kPanelRows;  // per row: lo, hi, bin width, bins / (hi - lo)
    float* hi = lo + kPanelRows;
    float* width = hi + kPanelRows;
    float* scale = width + kPanelRows;
    bool* single = single_all.get() + tid * kPanelRows;  // adaptive range of a row whose KL values are all equal
    const float fbins = static_cast<float>(bins);

#pragma omp for schedule(dynamic, 1)
    for (int64_t panel = 0; panel < panels; ++panel) {
      const int64_t row0 = panel * rows;
      if (a.adaptive) {
        for (int64_t r = 0; r < rows; ++r) row_min[r] = splat(__builtin_inff()), row_max[r] = -row_min[r];
        // vmin(v, acc) and vmax(v, acc) keep acc where v is NaN.
        sweep(d, row0, rows, [&](int64_t r0, const Tile& t) {
#pragma GCC unroll 6
          for (int r = 0; r < kTileRows; ++r) {
            row_min[r0 + r] = vmin(t.v[r][1], vmin(t.v[r][0], row_min[r0 + r]));
            row_max[r0 + r] = vmax(t.v[r][1], vmax(t.v[r][0], row_max[r0 + r]));
          }
        });
        for (int64_t r = 0; r < rows; ++r) {
          float l = row_min[r][0], h = row_max[r][0];
          for (int k = 1; k < kLanes; ++k) l = min_(l, row_min[r][k]), h = max_(h, row_max[r][k]);
          single[r] = l == h;
          if (single[r]) l -= 0.5f, h += 0.5f;  // numpy widens an empty range
          lo[r] = l, hi[r] = h;
        }
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          lo[r] = static_cast<float>(a.lo), hi[r] = static_cast<float>(a.hi);
          single[r] = false;
        }
      }
      for (int64_t r = 0; r < rows; ++r) width[r] = (hi[r] - lo[r]) / fbins, scale[r] = fbins / (hi[r] - lo[r]);
      for (int64_t i = 0; i < rows * (bins + 1); ++i) hist[i] = 0;

      const vi last = splat(static_cast<int32_t>(bins - 1));
      sweep(d, row0, rows, [&](int64_t r0, const Tile& t) {
        alignas(32) int32_t slot[kTileRows][kTileCols];  // counter of each value in hist
#pragma GCC unroll 6
        for (int r = 0; r < kTileRows; ++r) {
          const vf l = splat(lo[r0 + r]), h = splat(hi[r0 + r]), w = splat(width[r0 + r]);
          const vi row = splat(static_cast<int32_t>((r0 + r) * (bins + 1)));
          for (int k = 0; k < 2; ++k) {
            const vf v = t.v[r][k];
            vf f = (v - l) * splat(scale[r0 + r]);
            f = vmin(vmax(f, splat(0.0f)), to_float(last));  // NaN -> 0
            vi i = __builtin_convertvector(f, vi);
            const vf fi = to_float(i);
            // Edges are monotone, so at most one of the corrections applies; the last bin is closed.
            const vi down = v < l + fi * w;
            const vi up = v >= l + (fi + splat(1.0f)) * w;
            i = vmin(i + down - up, last);  // masks are -1 where true
            const vi counted = (v >= l) & (v <= h);
            store(slot[r] + k * kLanes, row + (counted ? i : last + splat(1)));
          }
        }
        // Interleaved over the rows: consecutive increments never hit the same counter.
        for (int k = 0; k < kTileCols; ++k) {
#pragma GCC unroll 6
          for (int r = 0; r < kTileRows; ++r) ++hist[slot[r][k]];
        }
      });

      const float kept_f = static_cast<float>(kept);
      for (int64_t r = 0; r < rows && row0 + r < M; ++r) {
        float* out = a.out + (row0 + r) * bins;
        for (int64_t b = 0; b < bins; ++b) out[b] = static_cast<float>(hist[r * (bins + 1) + b]) / kept_f;
        if (single[r]) {
          // Every value sits on the middle of the widened range: exactly on an edge for even bins, where float32
          // edges fall either side. fastral's rule (numpy's in exact arithmetic) is bin bins / 2.
          for (int64_t b = 0; b < bins; ++b) out[b] = 0.0f;
          out[bins / 2] = 1.0f;
        }
      }
    }
  }
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
