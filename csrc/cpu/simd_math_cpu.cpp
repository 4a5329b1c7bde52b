// Test hooks of simd_math.h: its vectorised exp and log over an array, so that tests/test_simd_math.py can measure
// their error in ulp against float64 on each instruction set's build (bound as _C.<isa>._simd_exp / _simd_log).
#include "simd_math.h"

namespace fastral {
namespace FASTRAL_ISA {

namespace {

template <class F>
void apply(const float* x, float* out, int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(out + i, f(load(x + i)));
  if (i < n) {  // the remainder through a padded vector
    float in[kLanes] = {}, res[kLanes];
    for (int64_t k = 0; k < n - i; ++k) in[k] = x[i + k];
    store(res, f(load(in)));
    for (int64_t k = 0; k < n - i; ++k) out[i + k] = res[k];
  }
}

}  // namespace

void simd_exp(const float* x, float* out, int64_t n) { apply(x, out, n, [](vf v) { return exp(v); }); }
void simd_log(const float* x, float* out, int64_t n) { apply(x, out, n, [](vf v) { return log(v); }); }

}  // namespace FASTRAL_ISA
}  // namespace fastral
