// fastral._C: the CPU kernels over raw pointers (no libtorch), with runtime instruction-set dispatch.
//
// Each kernel source is compiled once per ISA (CMakeLists.txt). At import the module picks the best ISA this CPU
// runs (avx2 needs AVX2, FMA and F16C), or the one named by the environment variable FASTRAL_CPU_ISA
// ("generic", "avx2"; unset or "auto" = best). The top-level functions run the picked ISA; every ISA this CPU
// can run is also reachable as a submodule (fastral._C.generic.region_stats, ...) so tests can compare them.
// _C.isa() names the picked ISA and _C.isas lists the runnable ones.
//
// Python (fastral/ops/*.py) validates every argument and owns all memory; the checks here are defence in depth so
// a bad call raises ValueError instead of crashing. Every call releases the GIL.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"

namespace py = pybind11;

namespace fastral {

FASTRAL_DECLARE_CPU_KERNELS(generic)
#if defined(FASTRAL_HAVE_AVX2)
FASTRAL_DECLARE_CPU_KERNELS(avx2)
#endif

namespace {

struct Kernels {
  const char* isa;
  int (*region_stats)(const RegionStatsArgs&);
  void (*kl_histogram)(const KlHistogramArgs&);
  int (*bald_stacked)(const BaldStackedArgs&);
  int (*bald_update)(const BaldUpdateArgs&);
  void (*bald_finalize)(const BaldFinalizeArgs&);
};

#define FASTRAL_KERNELS(ns) \
  Kernels { #ns, &ns::region_stats, &ns::kl_histogram, &ns::bald_stacked, &ns::bald_update, &ns::bald_finalize }

// The ISAs this CPU runs, best last.
std::vector<Kernels> runnable_isas() {
  std::vector<Kernels> out{FASTRAL_KERNELS(generic)};
#if defined(FASTRAL_HAVE_AVX2)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    out.push_back(FASTRAL_KERNELS(avx2));
#endif
  return out;
}

Kernels pick_isa(const std::vector<Kernels>& runnable) {
  const char* env = std::getenv("FASTRAL_CPU_ISA");
  std::string want = env == nullptr ? "" : env;
  if (want.empty() || want == "auto") return runnable.back();
  std::string names;
  for (const Kernels& k : runnable) {
    if (want == k.isa) return k;
    names += (names.empty() ? "" : ", ") + std::string(k.isa);
  }
  throw std::runtime_error("FASTRAL_CPU_ISA=" + want + " is not an instruction set this build runs on this CPU (" +
                           names + ")");
}

void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string("fastral._C.") + op + ": " + what);
}

// Product of non-negative sizes; raises if it overflows int64.
int64_t numel(const char* op, std::initializer_list<int64_t> dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    check(d >= 0, op, "sizes must be non-negative, got " + std::to_string(d));
    check(!__builtin_mul_overflow(n, d, &n), op, "the buffer size overflows int64");
  }
  return n;
}

template <class T>
T* pointer(const char* op, const char* name, uintptr_t address, int64_t count) {
  check(count == 0 || address != 0, op, std::string("argument '") + name + "' is a null pointer");
  return reinterpret_cast<T*>(address);
}

Dtype dtype_of(const char* op, int code) {
  check(code >= 0 && code <= 2, op,
        "unknown dtype code " + std::to_string(code) + " (0 float32, 1 float16, 2 bfloat16)");
  return static_cast<Dtype>(code);
}

void check_threads(const char* op, int nthreads) {
  check(nthreads >= 1, op, "nthreads must be >= 1, got " + std::to_string(nthreads));
}

void bind(py::module_& m, const Kernels k) {
  using Release = py::call_guard<py::gil_scoped_release>;

  m.def(
      "region_stats",
      [k](uintptr_t x, int dtype, int64_t B, int64_t C, int64_t H, int64_t W, uintptr_t mask, int64_t rh,
          int64_t rw, int64_t ph, int64_t pw, bool from_logits, uintptr_t counts, uintptr_t pool, uintptr_t mean,
          int nthreads) {
        const char* op = "region_stats";
        RegionStatsArgs a{};
        a.dtype = dtype_of(op, dtype);
        const int64_t n = numel(op, {B, C, H, W});
        check(C >= 1 && H >= 1 && W >= 1, op, "C, H and W must be >= 1");
        check(rh >= 1 && rh <= H && rw >= 1 && rw <= W, op, "the region must fit in the image");
        check(ph >= 1 && ph <= rh && pw >= 1 && pw <= rw, op, "pool must be >= 1 and at most the region size");
        check_threads(op, nthreads);
        const int64_t R = numel(op, {B, H / rh, W / rw});
        a.x = pointer<const void>(op, "x", x, n);
        a.B = B, a.C = C, a.H = H, a.W = W;
        a.mask = reinterpret_cast<const uint8_t*>(mask);
        a.rh = rh, a.rw = rw, a.ph = ph, a.pw = pw;
        a.from_logits = from_logits;
        a.counts = pointer<int32_t>(op, "counts", counts, numel(op, {R, C}));
        a.pool = pointer<float>(op, "pool", pool, numel(op, {R, 3, ph, pw}));
        a.mean = pointer<float>(op, "mean", mean, R);
        a.nthreads = nthreads;
        return R == 0 ? 0 : k.region_stats(a);
      },
      Release());

  m.def(
      "kl_histogram",
      [k](uintptr_t p, int64_t M, uintptr_t q, int64_t N, int64_t C, int64_t bins, bool adaptive, double lo,
          double hi, bool exclude_self, double eps, uintptr_t out, int nthreads) {
        const char* op = "kl_histogram";
        KlHistogramArgs a{};
        check(C >= 1, op, "C must be >= 1");
        check(bins >= 1, op, "bins must be >= 1");
        check(adaptive || (std::isfinite(lo) && std::isfinite(hi) && lo < hi), op, "range must be finite, lo < hi");
        check(std::isfinite(eps) && eps > 0, op, "eps must be positive and finite");
        check(!exclude_self || M == N, op, "exclude_self needs M == N");
        check(N < INT32_MAX && M < INT32_MAX, op, "M and N must be below 2^31");
        check_threads(op, nthreads);
        a.p = pointer<const float>(op, "p", p, numel(op, {M, C}));
        a.q = pointer<const float>(op, "q", q, numel(op, {N, C}));
        a.out = pointer<float>(op, "out", out, numel(op, {M, bins}));
        a.M = M, a.N = N, a.C = C, a.bins = bins;
        a.adaptive = adaptive, a.lo = lo, a.hi = hi, a.exclude_self = exclude_self, a.eps = eps;
        a.nthreads = nthreads;
        k.kl_histogram(a);
      },
      Release());

  m.def(
      "bald_stacked",
      [k](uintptr_t x, int dtype, int64_t T, int64_t B, int64_t C, int64_t H, int64_t W, bool sample_last,
          bool from_logits, uintptr_t bald, uintptr_t entropy, int nthreads) {
        const char* op = "bald_stacked";
        BaldStackedArgs a{};
        a.dtype = dtype_of(op, dtype);
        check(T >= 1 && C >= 1, op, "T and C must be >= 1");
        check_threads(op, nthreads);
        a.x = pointer<const void>(op, "x", x, numel(op, {T, B, C, H, W}));
        const int64_t pixels = numel(op, {B, H, W});
        a.bald = pointer<float>(op, "bald", bald, pixels);
        a.entropy = pointer<float>(op, "entropy", entropy, pixels);
        a.T = T, a.B = B, a.C = C, a.H = H, a.W = W, a.sample_last = sample_last, a.from_logits = from_logits;
        a.nthreads = nthreads;
        return pixels == 0 ? 0 : k.bald_stacked(a);
      },
      Release());

  m.def(
      "bald_update",
      [k](uintptr_t x, int dtype, int64_t T, int64_t B, int64_t C, int64_t H, int64_t W, bool sample_last,
          bool from_logits, bool first, uintptr_t sum_p, uintptr_t sum_h, int nthreads) {
        const char* op = "bald_update";
        BaldUpdateArgs a{};
        a.dtype = dtype_of(op, dtype);
        check(T >= 1 && C >= 1, op, "T and C must be >= 1");
        check_threads(op, nthreads);
        const int64_t n = numel(op, {B, C, H, W});
        a.x = pointer<const void>(op, "x", x, numel(op, {T, B, C, H, W}));
        a.sum_p = pointer<float>(op, "sum_p", sum_p, n);
        a.sum_h = pointer<float>(op, "sum_h", sum_h, numel(op, {B, H, W}));
        a.T = T, a.B = B, a.C = C, a.H = H, a.W = W, a.sample_last = sample_last, a.from_logits = from_logits;
        a.first = first, a.nthreads = nthreads;
        return n == 0 ? 0 : k.bald_update(a);
      },
      Release());

  m.def(
      "bald_finalize",
      [k](uintptr_t sum_p, uintptr_t sum_h, int64_t T, int64_t B, int64_t C, int64_t H, int64_t W, uintptr_t bald,
          uintptr_t entropy, int nthreads) {
        const char* op = "bald_finalize";
        BaldFinalizeArgs a{};
        check(T >= 1 && C >= 1, op, "T and C must be >= 1");
        check_threads(op, nthreads);
        a.sum_p = pointer<const float>(op, "sum_p", sum_p, numel(op, {B, C, H, W}));
        const int64_t pixels = numel(op, {B, H, W});
        a.sum_h = pointer<const float>(op, "sum_h", sum_h, pixels);
        a.bald = pointer<float>(op, "bald", bald, pixels);
        a.entropy = pointer<float>(op, "entropy", entropy, pixels);
        a.T = T, a.B = B, a.C = C, a.H = H, a.W = W, a.nthreads = nthreads;
        if (pixels != 0) k.bald_finalize(a);
      },
      Release());
}

}  // namespace
}  // namespace fastral

PYBIND11_MODULE(_C, m) {
  using namespace fastral;
  m.doc() = "fastral's CPU kernels (OpenMP, vectorised) over raw buffers; see fastral/ops/*.py";
  const std::vector<Kernels> runnable = runnable_isas();
  const Kernels picked = pick_isa(runnable);
  bind(m, picked);
  py::tuple names(runnable.size());
  for (size_t i = 0; i < runnable.size(); ++i) {
    py::module_ sub = m.def_submodule(runnable[i].isa, "the CPU kernels built for one instruction set");
    bind(sub, runnable[i]);
    names[i] = runnable[i].isa;
  }
  m.attr("isas") = names;
  const std::string isa = picked.isa;
  m.def("isa", [isa]() { return isa; }, "The instruction set the top-level kernels run on.");
}
