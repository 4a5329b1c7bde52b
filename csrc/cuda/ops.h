// Host entry points of fastral._C_cuda: defined in the .cu files, bound to Python in bindings.cpp (which checks
// every argument first). Arrays are raw device addresses of C-contiguous buffers; scores have dtype code 0
// (float32), 1 (float16) or 2 (bfloat16); every other float array is float32 and integer arrays int32. Each call
// runs on the given stream of the given device; outputs need not be initialised (every element is written).
// Calls that return status flags (fastral/ops/_common.py: FLAG_*) take a device int32 `flags` word of scratch and
// synchronise the stream once to read it; the others are fully asynchronous.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastral_cuda {

using Ptr = std::uintptr_t;  // a device address (0: absent)

struct Stream {
  int device;              // CUDA device ordinal
  std::uintptr_t handle;   // cudaStream_t (0: the legacy default stream)
};

// CUDA devices this module's runtime sees; RuntimeError (with CUDA's reason) where it cannot use the driver.
int device_count();

// x [B, C, H, W]; mask [B, H, W] uint8/bool (1 = ignore) or 0; counts int32 [R, C]; entropy_pool [R, 3, ph, pw];
// entropy_mean [R], R = B * (H / rh) * (W / rw).
int region_stats(Ptr x, int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W, Ptr mask,
                 std::int64_t rh, std::int64_t rw, std::int64_t ph, std::int64_t pw, bool from_logits, Ptr counts,
                 Ptr entropy_pool, Ptr entropy_mean, Ptr flags, const Stream& stream);

// p float32 [M, C], q float32 [N, C], out [M, bins]; workspace of kl_histogram_workspace_bytes(M, N, C, bins).
std::size_t kl_histogram_workspace_bytes(std::int64_t M, std::int64_t N, std::int64_t C, std::int64_t bins);
void kl_histogram(Ptr p, std::int64_t M, Ptr q, std::int64_t N, std::int64_t C, std::int64_t bins, bool adaptive,
                  double lo, double hi, bool exclude_self, double eps, Ptr out, Ptr workspace,
                  std::size_t workspace_bytes, const Stream& stream);

// x [T, B, C, H, W]; bald, entropy [B, H, W]; workspace of bald_stacked_workspace_bytes(...) (0 bytes unless the
// classes do not fit the one-pass kernel's shared memory).
std::size_t bald_stacked_workspace_bytes(int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                         const Stream& stream);
int bald_stacked(Ptr x, int dtype, std::int64_t T, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                 bool from_logits, Ptr bald, Ptr entropy, Ptr workspace, std::size_t workspace_bytes, Ptr flags,
                 const Stream& stream);

// One sample x [B, C, H, W] into sum_p [B, C, H, W] and sum_h [B, H, W] (first: written, else added to).
int bald_update(Ptr x, int dtype, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W, bool from_logits,
                bool first, Ptr sum_p, Ptr sum_h, Ptr flags, const Stream& stream);

// entropy = H[sum_p / T] (0 log 0 = 0), bald = entropy - sum_h / T.
void bald_finalize(Ptr sum_p, Ptr sum_h, std::int64_t T, std::int64_t B, std::int64_t C, std::int64_t H,
                   std::int64_t W, Ptr bald, Ptr entropy, const Stream& stream);

}  // namespace fastral_cuda
