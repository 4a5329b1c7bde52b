// Host entry points of fastral._C_cuda: defined in the .cu files, bound to Python in bindings.cpp (which checks
// every argument first). Arrays are raw device addresses of C-contiguous buffers. Each call
// runs on the given stream of the given device; outputs need not be initialised (every element is written).
// Calls that return status flags (csrc/contract.h: kFlag*) take a device int32 `flags` word of scratch and
// synchronise the stream once to read it; the others are fully asynchronous.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../contract.h"

namespace fastral_cuda {

using fastral::BaldFinalizeArgs;
using fastral::BaldStackedArgs;
using fastral::BaldUpdateArgs;
using fastral::KlHistogramArgs;
using fastral::RegionStatsArgs;

using Ptr = std::uintptr_t;  // a device address (0: absent)

struct Stream {
  int device;              // CUDA device ordinal
  std::uintptr_t handle;   // cudaStream_t (0: the legacy default stream)
};

// CUDA devices this module's runtime sees; RuntimeError (with CUDA's reason) where it cannot use the driver.
int device_count();

// The kernels take the contract's argument blocks (csrc/contract.h: shapes, addresses, dtype codes), checked and
// non-empty (bindings.cpp), plus what a GPU call needs: a status word, scratch memory and the stream.

// region_stats: outputs as in RegionStatsArgs; returns the status flags.
int region_stats(const RegionStatsArgs& a, Ptr flags, const Stream& stream);

// kl_histogram: workspace of kl_histogram_workspace_bytes(M, N, C, bins) bytes.
std::size_t kl_histogram_workspace_bytes(std::int64_t M, std::int64_t N, std::int64_t C, std::int64_t bins);
void kl_histogram(const KlHistogramArgs& a, Ptr workspace, std::size_t workspace_bytes, const Stream& stream);

// bald_stacked (fastral's [T, B, C, H, W] layout only: a.sample_last is refused): workspace of
// bald_stacked_workspace_bytes(...) (0 bytes unless the classes do not fit the one-pass kernel's shared memory).
std::size_t bald_stacked_workspace_bytes(int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                         const Stream& stream);
int bald_stacked(const BaldStackedArgs& a, Ptr workspace, std::size_t workspace_bytes, Ptr flags,
                 const Stream& stream);

// bald_update: adds the a.T samples one kernel launch each (fastral's layout only).
int bald_update(const BaldUpdateArgs& a, Ptr flags, const Stream& stream);

void bald_finalize(const BaldFinalizeArgs& a, const Stream& stream);

}  // namespace fastral_cuda
