// Helpers every kernel source shares: the per-ISA namespace and an owning buffer.
//
// ODR note: each kernel source is compiled twice with different instruction sets and linked into one module.
// Any inline function or template instantiated in both builds must live in namespace FASTRAL_ISA, or the linker
// may keep the AVX2 copy for the generic build too. So the kernel sources use no inline code from namespace std
// (no containers, std::min, std::log, ...): only these helpers, compiler builtins and plain C functions.
#pragma once

#ifndef FASTRAL_ISA
#error "compile the CPU kernels with -DFASTRAL_ISA=<namespace> (CMakeLists.txt does)"
#endif

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "kernels.h"

#define FASTRAL_INLINE inline __attribute__((always_inline))

namespace fastral {
namespace FASTRAL_ISA {

template <class T>
FASTRAL_INLINE T min_(T a, T b) { return b < a ? b : a; }
template <class T>
FASTRAL_INLINE T max_(T a, T b) { return a < b ? b : a; }

// An uninitialised, 64-byte aligned array of n trivially copyable T. Allocate outside parallel regions: a
// failed allocation throws std::bad_alloc, which reaches Python as MemoryError.
template <class T>
class Buffer {
 public:
  explicit Buffer(size_t n) {
    size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64));
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ~Buffer() { std::free(data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return data_; }
  T& operator[](size_t i) const { return data_[i]; }

 private:
  T* data_;
};

}  // namespace FASTRAL_ISA
}  // namespace fastral
