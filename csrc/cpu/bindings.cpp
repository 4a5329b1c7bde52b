// fastral._C: the CPU kernels over raw pointers (no libtorch), with runtime instruction-set dispatch.
//
// Each kernel source is compiled once per ISA (CMakeLists.txt). At import the module picks the best ISA this CPU
// runs (avx2 needs AVX2, FMA and F16C), or the one named by the environment variable FASTRAL_CPU_ISA
// ("generic", "avx2"; unset or "auto" = best). The top-level functions run the picked ISA; every ISA this CPU
// can run is also reachable as a submodule (fastral._C.generic.region_stats, ...) so tests can compare them.
// _C.isa() names the picked ISA and _C.isas lists the runnable ones.
//
// Every kernel takes the tuple of its contract's arguments (csrc/contract.h; fastral/ops/_compiled.py builds it)
// and the OpenMP thread count: kernel(args, nthreads). The arguments are checked first (check_args: a bad call
// raises ValueError instead of crashing); an empty problem returns without running a kernel. Kernels run without
// the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../bind.h"
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
  int (*region_stats)(const Cpu<RegionStatsArgs>&);
  void (*kl_histogram)(const Cpu<KlHistogramArgs>&);
  int (*bald_stacked)(const Cpu<BaldStackedArgs>&);
  int (*bald_update)(const Cpu<BaldUpdateArgs>&);
  void (*bald_finalize)(const Cpu<BaldFinalizeArgs>&);
  void (*simd_exp)(const float*, float*, int64_t);
  void (*simd_log)(const float*, float*, int64_t);
};

#define FASTRAL_KERNELS(ns) \
  Kernels {                                                                                                  \
    #ns, &ns::region_stats, &ns::kl_histogram, &ns::bald_stacked, &ns::bald_update, &ns::bald_finalize,     \
        &ns::simd_exp, &ns::simd_log                                                                         \
  }

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

// Binds kernel `name`: reads and checks its arguments with the GIL held, then runs it (when there is work) without.
template <class Args, class Result>
void bind_kernel(py::module_& m, const char* name, Result (*kernel)(const Cpu<Args>&)) {
  m.def(
      name,
      [name, kernel](const py::tuple& args, int nthreads) -> Result {
        const Check c{"fastral._C", name};
        Args a{};
        const int64_t outputs = bind::read_args(c, args, a);
        c(nthreads >= 1, "nthreads must be >= 1, got " + std::to_string(nthreads));
        py::gil_scoped_release release;
        if constexpr (std::is_void_v<Result>) {
          if (outputs) kernel(Cpu<Args>(a, nthreads));
        } else {
          return outputs ? kernel(Cpu<Args>(a, nthreads)) : 0;
        }
      },
      py::arg("args"), py::arg("nthreads"));
}

void bind_isa(py::module_& m, const Kernels k) {
  bind_kernel(m, "region_stats", k.region_stats);
  bind_kernel(m, "kl_histogram", k.kl_histogram);
  bind_kernel(m, "bald_stacked", k.bald_stacked);
  bind_kernel(m, "bald_update", k.bald_update);
  bind_kernel(m, "bald_finalize", k.bald_finalize);
  // Test hooks: simd_math.h's exp and log over n float32 values (tests/test_simd_math.py).
  for (auto [name, f] : {std::pair{"_simd_exp", k.simd_exp}, std::pair{"_simd_log", k.simd_log}}) {
    m.def(name, [f = f](uintptr_t x, uintptr_t out, int64_t n) {
      f(reinterpret_cast<const float*>(x), reinterpret_cast<float*>(out), n);
    });
  }
}

}  // namespace
}  // namespace fastral

PYBIND11_MODULE(_C, m) {
  using namespace fastral;
  m.doc() = "fastral's CPU kernels (OpenMP, vectorised) over raw buffers; see fastral/ops/*.py";
  const std::vector<Kernels> runnable = runnable_isas();
  const Kernels picked = pick_isa(runnable);
  bind_isa(m, picked);
  bind::export_contract(m);
  py::tuple names(runnable.size());
  for (size_t i = 0; i < runnable.size(); ++i) {
    py::module_ sub = m.def_submodule(runnable[i].isa, "the CPU kernels built for one instruction set");
    bind_isa(sub, runnable[i]);
    names[i] = runnable[i].isa;
  }
  m.attr("isas") = names;
  const std::string isa = picked.isa;
  m.def("isa", [isa]() { return isa; }, "The instruction set the top-level kernels run on.");
}
