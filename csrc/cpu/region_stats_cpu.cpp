// region_stats on the CPU: per-region argmax class counts and min/mean/max entropy pooling, one pass over the
// scores (contract: fastral/ops/region_stats.py, reference_region_stats).
//
// Design. The work is split into items of at most kRowsPerItem image rows that never straddle a pooling-window
// row (or the region's trailing rows that no window covers). An item walks its rows across the whole grid width,
// so each class plane is read as one contiguous stream: per row, pixel_stats gives every pixel's entropy and
// argmax (8 pixels per vector, see pixel_entropy.h) into a row buffer, which a scalar pass then folds into the
// item's partial results for each region of the row: class counts, entropy sum/count, and min/max/sum/count of
// each window. A second parallel loop gives each region to one thread, which combines its items' partials in item
// order. Item boundaries do not depend on the thread count, so every output is bit-identical for any number of
// threads. Sums are float32 within a window row segment and float64 across segments.
//
// Ignored pixels get label -1 in the row buffer and count nowhere; a chunk of 8 pixels that are all ignored is
// not read. Scores of ignored pixels in a partly ignored chunk are loaded but affect no output and no flag.
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

struct RegionAcc {
  double sum;
  int64_t n;
};

struct WindowAcc {
  double sum;
  float lo, hi;
  int64_t n;
};

// Entropy and argmax (-1 for ignored pixels) of pixels [0, width) of one row.
template <bool kFromLogits, class T>
int row_stats(const T* x, int64_t plane, int64_t C, const uint8_t* mask, int64_t width, float* entropy,
              int32_t* label) {
  int flags = 0;
  for_each_chunk(0, width, [&](int64_t i, auto chunk) {
    vi valid = chunk.valid();
    if (mask != nullptr) {
      valid &= chunk.load_unmasked(mask + i);
      if (!any(valid)) {
        chunk.store(label + i, splat(-1));
        return;
      }
    }
    auto reader = class_reader(x + i, plane, chunk);
    PixelStats st = pixel_stats<kFromLogits, true>(reader, C, nullptr, NoProbs{});
    flags |= chunk_flags<kFromLogits>(st, valid, reader, C);
    chunk.store(entropy + i, st.entropy);
    chunk.store(label + i, valid ? st.label : splat(-1));
  });
  return flags;
}

// Folds pixels [0, n) of a row into a region's counts and entropy sum, and into a window if there is one.
void accumulate(const float* entropy, const int32_t* label, int64_t n, int32_t* counts, RegionAcc& region,
                WindowAcc* window) {
  float lo = __builtin_inff(), hi = -__builtin_inff(), sum = 0.0f;
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (label[i] < 0) continue;
    float h = entropy[i];
    lo = min_(lo, h);
    hi = max_(hi, h);
    sum += h;
    ++k;
    ++counts[label[i]];
  }
  region.sum += sum;
  region.n += k;
  if (window != nullptr) {
    window->sum += sum;
    window->lo = min_(window->lo, lo);
    window->hi = max_(window->hi, hi);
    window->n += k;
  }
}

template <bool kFromLogits, class T>
int run(const RegionStatsArgs& a, const T* x) {
  const int64_t C = a.C, H = a.H, W = a.W, rh = a.rh, rw = a.rw, ph = a.ph, pw = a.pw;
  const int64_t ny = H / rh, nx = W / rw, R = a.B * ny * nx;
  const int64_t kh = rh / ph, kw = rw / pw, width = nx * rw, plane = H * W;

  // The segments of one region row; every region row is split the same way.
  int64_t n_seg = ph * ((kh + kRowsPerItem - 1) / kRowsPerItem) + (rh - ph * kh + kRowsPerItem - 1) / kRowsPerItem;
  Buffer<Segment> segs(n_seg);
  {
    int64_t k = 0;
    for (int64_t wy = 0; wy <= ph; ++wy) {
      int64_t begin = wy * kh, end = wy < ph ? begin + kh : rh;
      for (int64_t r = begin; r < end; r += kRowsPerItem)
        segs[k++] = Segment{r, min_(kRowsPerItem, end - r), wy < ph ? wy : -1};
    }
  }
  const int64_t items = a.B * ny * n_seg;

  Buffer<int32_t> item_counts(items * nx * C);
  Buffer<RegionAcc> item_regions(items * nx);
  Buffer<WindowAcc> item_windows(items * nx * pw);
  const int nt = a.nthreads;
  Buffer<float> row_entropy(nt * width);
  Buffer<int32_t> row_label(nt * width);

  int flags = 0;
#pragma omp parallel num_threads(nt) reduction(| : flags)
  {
    float* entropy = row_entropy.get() + omp_get_thread_num() * width;
    int32_t* label = row_label.get() + omp_get_thread_num() * width;

#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t region_row = item / n_seg;  // b * ny + iy
      const Segment seg = segs[item % n_seg];
      const int64_t b = region_row / ny, y0 = (region_row % ny) * rh + seg.row;
      int32_t* counts = item_counts.get() + item * nx * C;
      RegionAcc* regions = item_regions.get() + item * nx;
      WindowAcc* windows = item_windows.get() + item * nx * pw;
      std::memset(counts, 0, nx * C * sizeof(int32_t));
      for (int64_t i = 0; i < nx; ++i) regions[i] = RegionAcc{0.0, 0};
      for (int64_t i = 0; i < nx * pw; ++i) windows[i] = WindowAcc{0.0, __builtin_inff(), -__builtin_inff(), 0};

      for (int64_t y = y0; y < y0 + seg.rows; ++y) {
        const uint8_t* mask = a.mask == nullptr ? nullptr : a.mask + b * plane + y * W;
        flags |= row_stats<kFromLogits>(x + b * C * plane + y * W, plane, C, mask, width, entropy, label);
        for (int64_t ix = 0; ix < nx; ++ix) {
          const int64_t x0 = ix * rw;
          int32_t* cnt = counts + ix * C;
          if (seg.wy < 0) {
            accumulate(entropy + x0, label + x0, rw, cnt, regions[ix], nullptr);
            continue;
          }
          for (int64_t wx = 0; wx < pw; ++wx)
            accumulate(entropy + x0 + wx * kw, label + x0 + wx * kw, kw, cnt, regions[ix], windows + ix * pw + wx);
          accumulate(entropy + x0 + pw * kw, label + x0 + pw * kw, rw - pw * kw, cnt, regions[ix], nullptr);
        }
      }
    }

#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t ix = r % nx, first = (r / nx) * n_seg;
      int32_t* counts = a.counts + r * C;
      std::memset(counts, 0, C * sizeof(int32_t));
      RegionAcc region{0.0, 0};
      for (int64_t k = 0; k < n_seg; ++k) {
        const int64_t item = first + k;
        const int32_t* cnt = item_counts.get() + (item * nx + ix) * C;
        for (int64_t c = 0; c < C; ++c) counts[c] += cnt[c];
        region.sum += item_regions[item * nx + ix].sum;
        region.n += item_regions[item * nx + ix].n;
      }
      a.mean[r] = region.n ? static_cast<float>(region.sum / region.n) : 0.0f;

      float* pool = a.pool + r * 3 * ph * pw;
      for (int64_t wy = 0; wy < ph; ++wy) {
        for (int64_t wx = 0; wx < pw; ++wx) {
          WindowAcc w{0.0, __builtin_inff(), -__builtin_inff(), 0};
          for (int64_t k = 0; k < n_seg; ++k) {
            if (segs[k].wy != wy) continue;
            const WindowAcc& part = item_windows[((first + k) * nx + ix) * pw + wx];
            w.sum += part.sum;
            w.lo = min_(w.lo, part.lo);
            w.hi = max_(w.hi, part.hi);
            w.n += part.n;
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

int region_stats(const RegionStatsArgs& args) {
  return with_dtype(args.dtype, args.x, [&](const auto* x) {
    return args.from_logits ? run<true>(args, x) : run<false>(args, x);
  });
}

}  // namespace FASTRAL_ISA
}  // namespace fastral
