// fastral._C_cuda: the CUDA kernels over raw device addresses (Python ints), for fastral/ops/_cuda.py.
//
// Every kernel takes the tuple of its contract's arguments (csrc/contract.h; fastral/ops/_compiled.py builds it),
// then what a GPU call needs: scratch (a status word, a workspace), the device ordinal and the stream. The
// contract's checks run first, the same as in fastral._C, so both modules accept and refuse the same calls (an
// empty problem returns without touching the GPU); this module adds the limits of its own kernels (aligned
// addresses, int32 grid sizes, fastral's sample layout). Bad arguments raise ValueError (std::invalid_argument);
// CUDA errors raise RuntimeError with the CUDA error's name. Kernels run without the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>

#include "../bind.h"
#include "ops.h"

namespace py = pybind11;
using fastral::Check;
using fastral_cuda::Ptr;
using fastral_cuda::Stream;

namespace {

constexpr const char* kModule = "fastral._C_cuda";

// The limits of the CUDA kernels on top of the contract.
struct Limits {
  const Check& c;

  void fits_int(std::int64_t v, const char* name) const {
    c(v <= std::numeric_limits<int>::max(), std::string(name) + " is too large: " + std::to_string(v));
  }
  // A non-null array must be aligned to its element size (the kernels' vector loads).
  void aligned(const void* p, std::size_t element, const char* name) const {
    c(reinterpret_cast<Ptr>(p) % element == 0,
      std::string("argument '") + name + "' is not aligned to its " + std::to_string(element) + "-byte elements");
  }
  void image(std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W) const {
    fits_int(C, "C"), fits_int(W, "W");
    fits_int(B * H * W, "B * H * W (pixels)");  // bounds the grids of the per-pixel kernels
  }
  void flags(Ptr flags) const { c(flags != 0 && flags % 4 == 0, "the status word 'flags' is null or unaligned"); }
};

Stream stream_of(const Check& c, int device, std::uintptr_t handle) {
  c(device >= 0, "device must be a CUDA device ordinal >= 0, got " + std::to_string(device));
  return {device, handle};
}

int region_stats(const py::tuple& args, Ptr flags, int device, std::uintptr_t stream) {
  const Check c{kModule, "region_stats"};
  fastral::RegionStatsArgs a{};
  if (fastral::bind::read_args(c, args, a) == 0) return 0;
  const Limits l{c};
  l.image(a.B, a.C, a.H, a.W);
  l.fits_int(a.B * (a.H / a.rh) * (a.W / a.rw), "the number of regions");
  l.fits_int(a.rh * a.rw, "the region's pixel count");
  l.aligned(a.x, fastral::dtype_size(a.dtype), "x");
  l.aligned(a.counts, 4, "counts"), l.aligned(a.pool, 4, "pool"), l.aligned(a.mean, 4, "mean");
  l.flags(flags);
  const Stream s = stream_of(c, device, stream);
  py::gil_scoped_release release;
  return fastral_cuda::region_stats(a, flags, s);
}

std::size_t kl_histogram_workspace_bytes(std::int64_t M, std::int64_t N, std::int64_t C, std::int64_t bins) {
  const Check c{kModule, "kl_histogram_workspace_bytes"};
  c(M >= 0 && N >= 0, "M and N must be >= 0");
  c(C >= 1, "C must be >= 1");
  c(bins >= 1, "bins must be >= 1");
  return fastral_cuda::kl_histogram_workspace_bytes(M, N, C, bins);
}

void kl_histogram(const py::tuple& args, Ptr workspace, std::size_t workspace_bytes, int device,
                  std::uintptr_t stream) {
  const Check c{kModule, "kl_histogram"};
  fastral::KlHistogramArgs a{};
  if (fastral::bind::read_args(c, args, a) == 0) return;
  const Limits l{c};
  l.fits_int(a.C, "C"), l.fits_int(a.bins, "bins");
  l.aligned(a.p, 4, "p"), l.aligned(a.q, 4, "q"), l.aligned(a.out, 4, "out");
  c(a.N == 0 || (workspace != 0 && workspace % 256 == 0), "the workspace is null or not 256-byte aligned");
  const Stream s = stream_of(c, device, stream);
  py::gil_scoped_release release;
  fastral_cuda::kl_histogram(a, workspace, workspace_bytes, s);
}

std::size_t bald_stacked_workspace_bytes(int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                         int device, std::uintptr_t stream) {
  const Check c{kModule, "bald_stacked_workspace_bytes"};
  c.dtype(static_cast<fastral::Dtype>(dtype));
  c.numel({B, C, H, W});
  c(C >= 1, "C must be >= 1");
  Limits{c}.image(B, C, H, W);
  const Stream s = stream_of(c, device, stream);
  py::gil_scoped_release release;
  return fastral_cuda::bald_stacked_workspace_bytes(dtype, B, C, H, W, s);
}

// The checks of a stack of samples, for bald_stacked and bald_update.
template <class Args>
void check_stack(const Limits& l, const Args& a) {
  l.c(!a.sample_last, "the CUDA kernels read fastral's [T, B, C, H, W] layout only (sample_last must be false)");
  l.fits_int(a.T, "T"), l.fits_int(a.B, "B");
  l.image(a.B, a.C, a.H, a.W);
  l.aligned(a.x, fastral::dtype_size(a.dtype), "x");
}

int bald_stacked(const py::tuple& args, Ptr workspace, std::size_t workspace_bytes, Ptr flags, int device,
                 std::uintptr_t stream) {
  const Check c{kModule, "bald_stacked"};
  fastral::BaldStackedArgs a{};
  if (fastral::bind::read_args(c, args, a) == 0) return 0;
  const Limits l{c};
  check_stack(l, a);
  l.aligned(a.bald, 4, "bald"), l.aligned(a.entropy, 4, "entropy");
  l.flags(flags);
  const Stream s = stream_of(c, device, stream);
  py::gil_scoped_release release;
  return fastral_cuda::bald_stacked(a, workspace, workspace_bytes, flags, s);
}

int bald_update(const py::tuple& args, Ptr flags, int device, std::uintptr_t stream) {
  const Check c{kModule, "bald_update"};
  fastral::BaldUpdateArgs a{};
  if (fastral::bind::read_args(c, args, a) == 0) return 0;
  const Limits l{c};
  check_stack(l, a);
  l.aligned(a.sum_p, 4, "sum_p"), l.aligned(a.sum_h, 4, "sum_h");
  l.flags(flags);
  const Stream s = stream_of(c, device, stream);
  py::gil_scoped_release release;
  return fastral_cuda::bald_update(a, flags, s);
}

void bald_finalize(const py::tuple& args, int device, std::uintptr_t stream) {
  const Check c{kModule, "bald_finalize"};
  fastral::BaldFinalizeArgs a{};
  if (fastral::bind::read_args(c, args, a) == 0) return;
  const Limits l{c};
  l.image(a.B, a.C, a.H, a.W);
  l.aligned(a.sum_p, 4, "sum_p"), l.aligned(a.sum_h, 4, "sum_h");
  l.aligned(a.bald, 4, "bald"), l.aligned(a.entropy, 4, "entropy");
  const Stream s = stream_of(c, device, stream);
  py::gil_scoped_release release;
  fastral_cuda::bald_finalize(a, s);
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fastral's CUDA kernels over raw device addresses; use them through fastral.ops._cuda";
  m.def("device_count", &fastral_cuda::device_count,
        "device_count() -> CUDA devices this module sees; RuntimeError saying why where the driver is unusable");
  m.def("region_stats", &region_stats, "region_stats(args, flags, device, stream) -> status flags");
  m.def("kl_histogram_workspace_bytes", &kl_histogram_workspace_bytes,
        "kl_histogram_workspace_bytes(M, N, C, bins) -> bytes of workspace kl_histogram needs");
  m.def("kl_histogram", &kl_histogram, "kl_histogram(args, workspace, workspace_bytes, device, stream)");
  m.def("bald_stacked_workspace_bytes", &bald_stacked_workspace_bytes,
        "bald_stacked_workspace_bytes(dtype, B, C, H, W, device, stream) -> bytes of workspace bald_stacked needs "
        "(0 unless the classes do not fit its shared memory)");
  m.def("bald_stacked", &bald_stacked,
        "bald_stacked(args, workspace, workspace_bytes, flags, device, stream) -> status flags");
  m.def("bald_update", &bald_update, "bald_update(args, flags, device, stream) -> status flags");
  m.def("bald_finalize", &bald_finalize, "bald_finalize(args, device, stream)");
  fastral::bind::export_contract(m);
}
