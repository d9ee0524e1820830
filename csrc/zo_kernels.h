// Host interface of the CUDA kernels (no torch headers here: csrc/bindings.cpp adapts tensors to it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace zk {

constexpr int kThreads = 256;
enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Tensor addresses travel as kernel parameters, not in the device table, so a launch always writes the tensors it
// was given (torch.compile may hand the op copies of the tensors the table was built for). From CUDA 12.1 a kernel
// takes up to 32764 bytes of parameters (4096 before): 512 tensors a launch (12 KB of low-rank addresses), so that
// OPT-1.3B's 388 parameters are one launch, not four; every launch boundary drains the GPU (bench/NOTES.md).
#if CUDART_VERSION >= 12010
constexpr int kMaxTensorsPerLaunch = 512;
#else
constexpr int kMaxTensorsPerLaunch = 128;
#endif
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

// Low-rank update W_t += M_t V_t^T (csrc/zo_lowrank.cu). Bases and explicit factors are float32.
constexpr int kMaxLowrankRank = 128;  // zokernels.ops.MAX_RANK
constexpr int kTcMaxRank = 64;  // the tensor-core kernel's largest rank (cuda_backend.LOWRANK_TC_MAX_RANK)
struct LowrankPtrs {
  void* w[kMaxTensorsPerLaunch];
  const float* v[kMaxTensorsPerLaunch];  // V_t [d_in, r] row-major
  const float* f[kMaxTensorsPerLaunch];  // M_t [d_out, r] row-major when not regenerated, else unused
};

struct LowrankArgs {
  DType w_dtype;
  bool regenerate, stochastic;  // regenerate: M_t = sum_k c_k N_{t,k} from the streams; else M_t = f[t]
  bool tensor_core;  // the TF32 tensor-core kernel (16-bit weights, max_rank <= 64; its table geometry), else FMA
  int max_rank;      // the largest r of the launch
  LowrankPtrs ptrs;
  const int64_t* table;  // [rows, 8] (tensor, row0, tile_begin, tile_end, d_out, d_in, rank, tensor_id)
  int64_t rows;
  const float* coeffs;   // as CombineArgs (regenerate only)
  float scale;
  const int64_t* streams;
  uint32_t stream0;
  int K;
  uint32_t k0, k1, rk0, rk1;
};

cudaError_t launch_lowrank(const LowrankArgs& args, cudaStream_t stream);
cudaError_t launch_philox(const int64_t* counters, int64_t* out, int64_t n, uint32_t k0, uint32_t k1,
                          cudaStream_t stream);

}  // namespace zk
