// Experiment harness (not part of the package): the production CUDA perturb_ kernels (zk::launch_combine, included
// below) next to a memory-only twin of the Gaussian row walk (load, add the scale, store; no random numbers), built
// as a plain shared library with a C entry point. bench/exp/perturb_variants.py compiles it with nvcc, drives it
// through ctypes with any chunk size and times both against the copy roofline of the same process: the twin is the
// floor that the row walk itself sets. Variants that were measured and dropped are in bench/NOTES.md (fifth
// and sixth sessions) with their raw results under bench/results/raw/.
#include "../../csrc/zo_perturb.cu"

namespace zkx {
using namespace zk;

// The Gaussian nearest-rounding row walk of zo_perturb.cu with the direction replaced by + scale.
template <int MINB>
__global__ void __launch_bounds__(kThreads, MINB)
    memory_only(const __grid_constant__ TensorPtrs ptrs, const ChunkRow* __restrict__ table, float scale) {
  using T = __nv_bfloat16;
  const ChunkRow row = table[blockIdx.x];
  const RowAccess<T, T, 8> io(ptrs, row);
  const int groups = (static_cast<int>(row.length) + 7) / 8;
  T next[8];
  if (static_cast<int>(threadIdx.x) < groups) io.load(8 * threadIdx.x, next);
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    float acc[8];
    to_f32<T, 8>(next, acc);
    if (g + kThreads < groups) io.load(8 * (g + kThreads), next);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j] += scale;
    io.template store<false>(8 * g, acc, 0, 0, make_uint2(0, 0));
  }
}

}  // namespace zkx

// variant 0: production (gaussian/stochastic flags apply); 1: the memory-only twin.
extern "C" int zkx_max_tensors() { return zk::kMaxTensorsPerLaunch; }  // as compiled (zo_kernels.h)

extern "C" int zkx_launch(int variant, void** dsts, void** srcs, int n, const int64_t* table, int64_t rows, float scale,
                          int K, uint32_t k0, uint32_t k1, uint32_t rk0, uint32_t rk1, int gaussian, int stochastic,
                          void* stream_handle) {
  using namespace zk;
  if (n > kMaxTensorsPerLaunch) return -1;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  TensorPtrs ptrs{};
  for (int t = 0; t < n; ++t) { ptrs.dst[t] = dsts[t]; ptrs.src[t] = srcs[t]; }
  if (variant == 1) {
    zkx::memory_only<5><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        ptrs, reinterpret_cast<const ChunkRow*>(table), scale);
    return static_cast<int>(cudaGetLastError());
  }
  CombineArgs a{};
  a.dst_dtype = a.src_dtype = DType::kBFloat16;
  a.gaussian = gaussian != 0;
  a.stochastic = stochastic != 0;
  a.ptrs = ptrs;
  a.table = table;
  a.rows = rows;
  a.scale = scale;
  a.K = K;
  a.k0 = k0; a.k1 = k1; a.rk0 = rk0; a.rk1 = rk1;
  return static_cast<int>(launch_combine(a, stream));
}
