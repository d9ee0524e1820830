// Output update of a low-rank perturbation for the CUDA backend (lowrank_delta_add_): out[t, j] += scale *
// sum_k xv[t, k] f[j, k], summed in float32 and rounded once (to nearest) into out's dtype; out [n_rows, d_out],
// xv [n_rows, r] and f [d_out, r] float32, all contiguous. One launch per layer output, one read and one write of
// it: the product is r FMAs per element, so this is meant for small ranks (ops.py sends larger ones to cuBLAS).
// A block takes kDeltaRows rows x kDeltaCols columns: warp w rows 8 w .. 8 w + 7, lane l columns 4 l .. 4 l + 3
// (a warp's row segment is 256 contiguous bytes of bf16), every output vector of the thread loaded before the
// product so that all of them are in flight at once. xv's and f's entries for the block are staged in shared
// memory, rank chunk by rank chunk, transposed so that a k step reads one float4 of f and two of xv per thread
// (the xv reads are one address per warp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "zo_elements.cuh"
#include "zo_kernels.h"

namespace zk {

constexpr int kDeltaRows = 64;       // rows per block: 8 warps x 8 rows
constexpr int kDeltaCols = 128;      // columns per block: 32 lanes x 4
constexpr int kDeltaRankChunk = 32;  // ranks staged at a time
static_assert(kThreads == 256 && kDeltaRows == 8 * (kThreads / 32) && kDeltaCols == 4 * 32, "thread tiling");

template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    delta_add_kernel(T* __restrict__ out, const float* __restrict__ xv, const float* __restrict__ f, float scale,
                     int64_t n_rows, int64_t d_out, int r, int64_t col_blocks) {
  __shared__ __align__(16) float fs[kDeltaRankChunk][kDeltaCols];  // fs[k][c] = f[col0 + c, k0 + k]
  __shared__ __align__(16) float xs[kDeltaRankChunk][kDeltaRows];  // xs[k][i] = xv[row0 + i, k0 + k]
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) / col_blocks) * kDeltaRows;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) % col_blocks) * kDeltaCols;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t col = col0 + 4 * lane;

  T raw[8][4];  // this thread's output elements: rows row0 + 8 warp + i, columns col .. col + 3
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t row = row0 + 8 * warp + i;
    if (row < n_rows) load_raw<T, 4>(out + row * d_out, col, d_out, raw[i]);
  }
  float acc[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[i][c] = 0.0f;

  for (int k0 = 0; k0 < r; k0 += kDeltaRankChunk) {
    const int width = min(kDeltaRankChunk, r - k0);
    __syncthreads();  // the last chunk's readers are done
    // consecutive threads on consecutive ranks of one row of f (or xv): coalesced where r is large
    for (int e = threadIdx.x; e < kDeltaCols * width; e += kThreads) {
      const int c = e / width, k = e - c * width;
      fs[k][c] = col0 + c < d_out ? f[(col0 + c) * r + k0 + k] : 0.0f;
    }
    for (int e = threadIdx.x; e < kDeltaRows * width; e += kThreads) {
      const int i = e / width, k = e - i * width;
      xs[k][i] = row0 + i < n_rows ? xv[(row0 + i) * r + k0 + k] : 0.0f;
    }
    __syncthreads();
    for (int k = 0; k < width; ++k) {
      const float4 fv = *reinterpret_cast<const float4*>(&fs[k][4 * lane]);
      const float4 x0 = *reinterpret_cast<const float4*>(&xs[k][8 * warp]);
      const float4 x1 = *reinterpret_cast<const float4*>(&xs[k][8 * warp + 4]);
      const float fk[4] = {fv.x, fv.y, fv.z, fv.w}, xk[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[i][c] = fmaf(xk[i], fk[c], acc[i][c]);
    }
  }

  const uint32_t no_words[4] = {0u, 0u, 0u, 0u};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t row = row0 + 8 * warp + i;
    if (row >= n_rows) continue;
    float v[4];
    to_f32<T, 4>(raw[i], v);
#pragma unroll
    for (int c = 0; c < 4; ++c) v[c] = fmaf(scale, acc[i][c], v[c]);
    store_group<T, 4>(out + row * d_out, col, d_out, v, no_words, false);
  }
}

cudaError_t launch_delta_add(const DeltaAddArgs& a, cudaStream_t stream) {
  if (a.n_rows == 0 || a.d_out == 0) return cudaSuccess;
  const int64_t col_blocks = (a.d_out + kDeltaCols - 1) / kDeltaCols;
  const int64_t blocks = (a.n_rows + kDeltaRows - 1) / kDeltaRows * col_blocks;
  if (blocks > 0x7FFFFFFF || a.rank < 1) return cudaErrorInvalidValue;
  return with_element_type(a.out_dtype, [&](auto t) {
    using T = decltype(t);
    delta_add_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<T*>(a.out), a.xv, a.f, a.scale, a.n_rows, a.d_out, a.rank, col_blocks);
    return cudaGetLastError();
  });
}

}  // namespace zk
