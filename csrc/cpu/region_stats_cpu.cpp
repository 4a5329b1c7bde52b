// region_stats on the CPU: per-region argmax class counts and min/mean/max entropy pooling, one pass over the
// scores (contract: fastral/ops/region_stats.py, reference_region_stats).
//
// Design. The work is split into items of at most kRowsPerItem image rows that never straddle a pooling-window
// row (or the region's trailing rows that no window covers). An item walks its rows across the whole grid width,
// so each class plane is read as one contiguous stream: per row, pixel_stats gives every pixel's entropy and
// argmax (8 pixels per vector, see pixel_entropy.h) into a row buffer, which a second pass folds into the item's
// partial results. Each region row of pixels splits into pw + 1 slots, the pw pooling windows and the rest (the
// trailing columns; the whole row in the trailing rows); every slot keeps lane-wise min, max, sum and count over
// the item's rows, reduced to one partial per (item, region, slot) at the end of the item. Class counts go
// straight to the item's per-region counters. A second parallel loop gives each region to one thread, which
// combines its items' partials in item order: a window from its slot in the items of its window row, the region
// mean from every slot. Item boundaries do not depend on the thread count, so every output is bit-identical for
// any number of threads. Sums are float32 within an item and float64 across items.
//
// Ignored pixels get label C in the row buffer: they count in a slot no output reads and are left out of every
// entropy statistic. A chunk of 8 pixels that are all ignored is not read; scores of ignored pixels in a partly
// ignored chunk are loaded but affect no output and no flag.
// Memory: O(W) per thread plus O(items * nx * (C + pw)) partials (about 1 MB for a Cityscapes frame).
#include <omp.h>

#include <cstring>

#include "pixel_entropy.h"

namespace fastral {
FASTRAL_DECLARE_CPU_KERNELS(FASTRAL_ISA)
namespace FASTRAL_ISA {
namespace {

constexpr int64_t kRowsPerItem = 4;

// Rows [row, row + rows) of a region row, inside pooling-window row wy (-1: the trailing rows).
struct Segment {
  int64_t row, rows, wy;
};

// Entropy statistics of a set of pixels, lane-wise while an item runs (LaneStats) and reduced (Stats).
struct LaneStats {
  vf lo, hi, sum;
  vi n;
};

struct Stats {
  double sum;
  float lo, hi;
  int64_t n;
};

constexpr Stats kEmpty{0.0, __builtin_inff(), -__builtin_inff(), 0};

FASTRAL_INLINE void combine(Stats& acc, const Stats& s) {
  acc.sum += s.sum;
  acc.lo = min_(acc.lo, s.lo);
  acc.hi = max_(acc.hi, s.hi);
  acc.n += s.n;
}

// Entropy and argmax (C for ignored pixels) of pixels [0, width) of one row.
template <bool kFromLogits, class T>
int row_stats(const T* x, int64_t plane, int64_t C, const uint8_t* mask, int64_t width, float* entropy,
              int32_t* label) {
  const vi ignored = splat(static_cast<int32_t>(C));
  int flags = 0;
  for_each_chunk(0, width, [&](int64_t i, auto chunk) {
    vi valid = chunk.valid();
    if (mask != nullptr) {
      valid &= chunk.load_unmasked(mask + i);
      if (!any(valid)) {
        chunk.store(label + i, ignored);
        return;
      }
    }
    const PixelStats st =
        pixel_stats<kFromLogits, true>(score_reader(x + i, plane, chunk), C, valid, nullptr, NoProbs{});
    flags |= st.flags;
    chunk.store(entropy + i, st.entropy);
    chunk.store(label + i, valid ? st.label : ignored);
  });
  return flags;
}

// Folds the entropies of pixels [0, n) of the row buffers into a slot, skipping ignored pixels.
void fold(const float* entropy, const int32_t* label, int64_t n, vi ignored, LaneStats& s) {
  const vf inf = splat(__builtin_inff());
  for_each_chunk(0, n, [&](int64_t i, auto chunk) {
    const vi ok = chunk.valid() & (chunk.load(label + i) != ignored);
    const vf h = chunk.load(entropy + i);
    s.lo = vmin(ok ? h : inf, s.lo);
    s.hi = vmax(ok ? h : -inf, s.hi);
    s.sum += ok ? h : splat(0.0f);
    s.n -= ok;  // ok is -1 where true
  });
}

template <bool kFromLogits, class T>
int run(const Cpu<RegionStatsArgs>& a, const T* x) {
  const int64_t C = a.C, H = a.H, W = a.W, rh = a.rh, rw = a.rw, ph = a.ph, pw = a.pw;
  const int64_t ny = H / rh, nx = W / rw, R = a.B * ny * nx;
  const int64_t kh = rh / ph, kw = rw / pw, width = nx * rw, plane = H * W;
  const int64_t slots = pw + 1;  // per region row of pixels: the pw windows, then the rest

  // The segments of one region row; every region row is split the same way.
  const int64_t n_seg =
      ph * ((kh + kRowsPerItem - 1) / kRowsPerItem) + (rh - ph * kh + kRowsPerItem - 1) / kRowsPerItem;
  Buffer<Segment> segs(n_seg);
  {
    int64_t k = 0;
    for (int64_t wy = 0; wy <= ph; ++wy) {
      const int64_t begin = wy * kh, end = wy < ph ? begin + kh : rh;
      for (int64_t r = begin; r < end; r += kRowsPerItem)
        segs[k++] = Segment{r, min_(kRowsPerItem, end - r), wy < ph ? wy : -1};
    }
  }
  const int64_t items = a.B * ny * n_seg;

  Buffer<int32_t> item_counts(items * nx * (C + 1));  // slot C: ignored pixels
  Buffer<Stats> item_stats(items * nx * slots);
  const int nt = a.nthreads;
  Buffer<float> row_entropy(nt * width);
  Buffer<int32_t> row_label(nt * width);
  Buffer<LaneStats> lane_stats(nt * nx * slots);

  int flags = 0;
#pragma omp parallel num_threads(nt) reduction(| : flags)
  {
    const int tid = omp_get_thread_num();
    float* entropy = row_entropy.get() + tid * width;
    int32_t* label = row_label.get() + tid * width;
    LaneStats* lanes = lane_stats.get() + tid * nx * slots;
    const vi ignored = splat(static_cast<int32_t>(C));

#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t region_row = item / n_seg;  // b * ny + iy
      const Segment seg = segs[item % n_seg];
      const int64_t b = region_row / ny, y0 = (region_row % ny) * rh + seg.row;
      int32_t* counts = item_counts.get() + item * nx * (C + 1);
      std::memset(counts, 0, nx * (C + 1) * sizeof(int32_t));
      const vf inf = splat(__builtin_inff());
      for (int64_t i = 0; i < nx * slots; ++i) lanes[i] = LaneStats{inf, -inf, splat(0.0f), splat(0)};

      for (int64_t y = y0; y < y0 + seg.rows; ++y) {
        const uint8_t* mask = a.mask == nullptr ? nullptr : a.mask + b * plane + y * W;
        flags |= row_stats<kFromLogits>(x + b * C * plane + y * W, plane, C, mask, width, entropy, label);
        for (int64_t ix = 0; ix < nx; ++ix) {
          const int64_t x0 = ix * rw;
          int32_t* cnt = counts + ix * (C + 1);
#pragma GCC unroll 4
          for (int64_t i = x0; i < x0 + rw; ++i) ++cnt[label[i]];
          LaneStats* slot = lanes + ix * slots;
          if (seg.wy < 0) {
            fold(entropy + x0, label + x0, rw, ignored, slot[pw]);
            continue;
          }
          for (int64_t wx = 0; wx < pw; ++wx) fold(entropy + x0 + wx * kw, label + x0 + wx * kw, kw, ignored, slot[wx]);
          fold(entropy + x0 + pw * kw, label + x0 + pw * kw, rw - pw * kw, ignored, slot[pw]);
        }
      }
      for (int64_t i = 0; i < nx * slots; ++i) {
        const LaneStats& s = lanes[i];
        item_stats[item * nx * slots + i] = Stats{hsum(s.sum), hmin(s.lo), hmax(s.hi), hsum(s.n)};
      }
    }

#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t ix = r % nx, first = (r / nx) * n_seg;
      int32_t* counts = a.counts + r * C;
      std::memset(counts, 0, C * sizeof(int32_t));
      Stats region = kEmpty;
      for (int64_t item = first; item < first + n_seg; ++item) {
        const int32_t* cnt = item_counts.get() + (item * nx + ix) * (C + 1);
        for (int64_t c = 0; c < C; ++c) counts[c] += cnt[c];
        for (int64_t s = 0; s < slots; ++s) combine(region, item_stats[(item * nx + ix) * slots + s]);
      }
      a.mean[r] = region.n ? static_cast<float>(region.sum / region.n) : 0.0f;

      float* pool = a.pool + r * 3 * ph * pw;
      for (int64_t wy = 0; wy < ph; ++wy) {
        for (int64_t wx = 0; wx < pw; ++wx) {
          Stats w = kEmpty;
          for (int64_t k = 0; k < n_seg; ++k) {
            if (segs[k].wy == wy) combine(w, item_stats[((first + k) * nx + ix) * slots + wx]);
          }
          const int64_t cell = wy * pw + wx;
          pool[cell] = w.n ? w.lo : 0.0f;
          pool[ph * pw + cell] = w.n ? static_cast<float>(w.sum / w.n) : 0.0f;
          pool[2 * ph * pw + cell] = w.n ? w.hi : 0.0f;
        }
      }
    }
  }
  return flags;
}

}  // namespace

int region_stats(const Cpu<RegionStatsArgs>& args) {
  return with_dtype(args.dtype, args.x, [&](const auto* x) {
    return args.from_logits ? run<true>(args, x) : run<false>(args, x);
  });
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
