// Host interface of the CUDA kernels (no torch headers here: csrc/bindings.cpp adapts tensors to it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace zk {

constexpr int kThreads = 256;
enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Tensor addresses travel as kernel parameters, not in the device table, so a launch always writes the tensors it
// was given (torch.compile may hand the op copies of the tensors the table was built for).
constexpr int kMaxTensorsPerLaunch = 128;
struct TensorPtrs {
  void* dst[kMaxTensorsPerLaunch];
  const void* src[kMaxTensorsPerLaunch];
};

struct CombineArgs {
  DType dst_dtype, src_dtype;
  bool gaussian, stochastic;
  TensorPtrs ptrs;
  const int64_t* table;  // [rows, 6] chunk rows
  int64_t rows;
  const float* coeffs;   // [K] on the device, or nullptr: every direction uses `scale`
  float scale;
  const int64_t* streams;  // [K] on the device, or nullptr: streams stream0 .. stream0 + K - 1
  uint32_t stream0;
  int K;
  uint32_t k0, k1, rk0, rk1;  // Philox keys of the seed and of the rounding seed
};

cudaError_t launch_combine(const CombineArgs& args, cudaStream_t stream);
cudaError_t launch_philox(const int64_t* counters, int64_t* out, int64_t n, uint32_t k0, uint32_t k1,
                          cudaStream_t stream);

}  // namespace zk
