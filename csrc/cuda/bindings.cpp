// fastral._C_cuda: the CUDA kernels over raw device addresses (Python ints), for fastral/ops/_cuda.py.
//
// The Python layer checks arguments and hands over contiguous buffers; these checks are the second line of
// defence, so that a wrong call raises ValueError (std::invalid_argument) instead of corrupting memory. CUDA errors
// raise RuntimeError with the CUDA error's name. The GIL is released while a call runs.
#include <pybind11/pybind11.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "ops.h"

namespace py = pybind11;
using fastral_cuda::Ptr;
using fastral_cuda::Stream;

namespace {

class Checker {
 public:
  explicit Checker(const char* fn) : fn_(fn) {}

  void require(bool ok, const std::string& what) const {
    if (!ok) throw std::invalid_argument(std::string("fastral._C_cuda.") + fn_ + ": " + what);
  }
  void positive(std::int64_t v, const char* name) const {
    require(v >= 1, std::string(name) + " must be >= 1, got " + std::to_string(v));
  }
  void fits_int(std::int64_t v, const char* name) const {
    require(v <= std::numeric_limits<int>::max(), std::string(name) + " is too large: " + std::to_string(v));
  }
  // A required array: non-null and aligned to its element size.
  void array(Ptr p, std::size_t element, const char* name) const {
    require(p != 0, std::string("array '") + name + "' is null");
    require(p % element == 0, std::string("array '") + name + "' is not aligned to its " + std::to_string(element) +
                                  "-byte elements");
  }
  void dtype(int code) const {
    require(code >= 0 && code <= 2, "dtype code must be 0 (float32), 1 (float16) or 2 (bfloat16), got " +
                                        std::to_string(code));
  }
  Stream stream(int device, std::uintptr_t handle) const {
    require(device >= 0, "device must be a CUDA device ordinal >= 0, got " + std::to_string(device));
    return {device, handle};
  }

 private:
  const char* fn_;
};

std::size_t scalar_size(int dtype) { return dtype == 0 ? 4 : 2; }

void check_image(const Checker& c, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W) {
  c.positive(B, "B"), c.positive(C, "C"), c.positive(H, "H"), c.positive(W, "W");
  c.fits_int(C, "C"), c.fits_int(W, "W");
  c.fits_int(B * H * W, "B * H * W (pixels)");  // bounds the grids of the per-pixel kernels
}

int region_stats(Ptr x, int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W, Ptr mask,
                 std::int64_t rh, std::int64_t rw, std::int64_t ph, std::int64_t pw, bool from_logits, Ptr counts,
                 Ptr entropy_pool, Ptr entropy_mean, Ptr flags, int device, std::uintptr_t stream) {
  const Checker c("region_stats");
  c.dtype(dtype);
  check_image(c, B, C, H, W);
  c.positive(rh, "rh"), c.positive(rw, "rw"), c.positive(ph, "ph"), c.positive(pw, "pw");
  c.require(rh <= H && rw <= W, "region (" + std::to_string(rh) + ", " + std::to_string(rw) +
                                    ") is larger than the image " + std::to_string(H) + "x" + std::to_string(W));
  c.require(ph <= rh && pw <= rw, "pool (" + std::to_string(ph) + ", " + std::to_string(pw) +
                                      ") has more cells than the region has pixels");
  c.fits_int(B * (H / rh) * (W / rw), "the number of regions");
  c.fits_int(rh * rw, "the region's pixel count");
  c.array(x, scalar_size(dtype), "x");
  c.array(counts, 4, "counts"), c.array(entropy_pool, 4, "entropy_pool"), c.array(entropy_mean, 4, "entropy_mean");
  c.array(flags, 4, "flags");
  return fastral_cuda::region_stats(x, dtype, B, C, H, W, mask, rh, rw, ph, pw, from_logits, counts, entropy_pool,
                                    entropy_mean, flags, c.stream(device, stream));
}

std::size_t kl_histogram_workspace_bytes(std::int64_t M, std::int64_t N, std::int64_t C, std::int64_t bins) {
  const Checker c("kl_histogram_workspace_bytes");
  c.positive(M, "M"), c.positive(N, "N"), c.positive(C, "C"), c.positive(bins, "bins");
  return fastral_cuda::kl_histogram_workspace_bytes(M, N, C, bins);
}

void kl_histogram(Ptr p, std::int64_t M, Ptr q, std::int64_t N, std::int64_t C, std::int64_t bins, bool adaptive,
                  double lo, double hi, bool exclude_self, double eps, Ptr out, Ptr workspace,
                  std::size_t workspace_bytes, int device, std::uintptr_t stream) {
  const Checker c("kl_histogram");
  c.positive(M, "M"), c.positive(N, "N"), c.positive(C, "C"), c.positive(bins, "bins");
  c.fits_int(C, "C"), c.fits_int(bins, "bins");
  c.fits_int(M, "M");  // bounds the grid
  c.require(adaptive || (std::isfinite(lo) && std::isfinite(hi) && lo < hi),
            "a fixed range needs finite lo < hi, got (" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
  c.require(std::isfinite(eps) && eps > 0, "eps must be a positive float, got " + std::to_string(eps));
  c.require(!exclude_self || M == N, "exclude_self needs as many rows in p (" + std::to_string(M) + ") as in q (" +
                                         std::to_string(N) + ")");
  c.array(p, 4, "p"), c.array(q, 4, "q"), c.array(out, 4, "out"), c.array(workspace, 256, "workspace");
  fastral_cuda::kl_histogram(p, M, q, N, C, bins, adaptive, lo, hi, exclude_self, eps, out, workspace,
                             workspace_bytes, c.stream(device, stream));
}

std::size_t bald_stacked_workspace_bytes(int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                         int device, std::uintptr_t stream) {
  const Checker c("bald_stacked_workspace_bytes");
  c.dtype(dtype);
  check_image(c, B, C, H, W);
  return fastral_cuda::bald_stacked_workspace_bytes(dtype, B, C, H, W, c.stream(device, stream));
}

int bald_stacked(Ptr x, int dtype, std::int64_t T, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                 bool from_logits, Ptr bald, Ptr entropy, Ptr workspace, std::size_t workspace_bytes, Ptr flags,
                 int device, std::uintptr_t stream) {
  const Checker c("bald_stacked");
  c.dtype(dtype);
  c.positive(T, "T"), c.fits_int(T, "T"), c.fits_int(B, "B");
  check_image(c, B, C, H, W);
  c.array(x, scalar_size(dtype), "x"), c.array(bald, 4, "bald"), c.array(entropy, 4, "entropy");
  c.array(flags, 4, "flags");
  return fastral_cuda::bald_stacked(x, dtype, T, B, C, H, W, from_logits, bald, entropy, workspace, workspace_bytes,
                                    flags, c.stream(device, stream));
}

int bald_update(Ptr x, int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W, bool from_logits,
                bool first, Ptr sum_p, Ptr sum_h, Ptr flags, int device, std::uintptr_t stream) {
  const Checker c("bald_update");
  c.dtype(dtype);
  check_image(c, B, C, H, W);
  c.array(x, scalar_size(dtype), "x"), c.array(sum_p, 4, "sum_p"), c.array(sum_h, 4, "sum_h");
  c.array(flags, 4, "flags");
  return fastral_cuda::bald_update(x, dtype, B, C, H, W, from_logits, first, sum_p, sum_h, flags,
                                   c.stream(device, stream));
}

void bald_finalize(Ptr sum_p, Ptr sum_h, std::int64_t T, std::int64_t B, std::int64_t C, std::int64_t H,
                   std::int64_t W, Ptr bald, Ptr entropy, int device, std::uintptr_t stream) {
  const Checker c("bald_finalize");
  c.positive(T, "T");
  check_image(c, B, C, H, W);
  c.array(sum_p, 4, "sum_p"), c.array(sum_h, 4, "sum_h"), c.array(bald, 4, "bald"), c.array(entropy, 4, "entropy");
  fastral_cuda::bald_finalize(sum_p, sum_h, T, B, C, H, W, bald, entropy, c.stream(device, stream));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fastral's CUDA kernels over raw device addresses; use them through fastral.ops._cuda";
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("device_count", &fastral_cuda::device_count,
        "device_count() -> CUDA devices this module sees; RuntimeError saying why where the driver is unusable");
  m.def("region_stats", &region_stats, nogil,
        "region_stats(x, dtype, B, C, H, W, mask, rh, rw, ph, pw, from_logits, counts, entropy_pool, entropy_mean, "
        "flags, device, stream) -> status flags");
  m.def("kl_histogram_workspace_bytes", &kl_histogram_workspace_bytes,
        "kl_histogram_workspace_bytes(M, N, C, bins) -> bytes of workspace kl_histogram needs");
  m.def("kl_histogram", &kl_histogram, nogil,
        "kl_histogram(p, M, q, N, C, bins, adaptive, lo, hi, exclude_self, eps, out, workspace, workspace_bytes, "
        "device, stream)");
  m.def("bald_stacked_workspace_bytes", &bald_stacked_workspace_bytes, nogil,
        "bald_stacked_workspace_bytes(dtype, B, C, H, W, device, stream) -> bytes of workspace bald_stacked needs "
        "(0 unless the classes do not fit its shared memory)");
  m.def("bald_stacked", &bald_stacked, nogil,
        "bald_stacked(x, dtype, T, B, C, H, W, from_logits, bald, entropy, workspace, workspace_bytes, flags, "
        "device, stream) -> status flags");
  m.def("bald_update", &bald_update, nogil,
        "bald_update(x, dtype, B, C, H, W, from_logits, first, sum_p, sum_h, flags, device, stream) -> status flags");
  m.def("bald_finalize", &bald_finalize, nogil,
        "bald_finalize(sum_p, sum_h, T, B, C, H, W, bald, entropy, device, stream)");
}
