// Device queries of fastral._C_cuda (no kernels).
#include "common.cuh"

namespace fastral_cuda {

int device_count() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    throw std::runtime_error("fastral._C_cuda: cannot use the CUDA driver: " + describe_cuda_error(err));
  }
  return count;
}

}  // namespace fastral_cuda
