// Multi-tensor low-rank update for the CUDA backend (lowrank_combine_ / lowrank_add_): W_t += M_t V_t^T in one
// pass over each weight, M_t [d_out, r] = sum_k c_k N_{t,k} regenerated from the counter contract (or an explicit
// factor), V_t [d_in, r] a float32 basis. One block per table row (zokernels/backends/cuda_backend.py): rows
// [row0, row0 + kLowrankRows) of weight t and its column tiles [tile_begin, tile_end) of kLowrankCols. The
// block forms its rows of M once (transposed, in shared memory), then per column tile stages V's rows in
// kRankChunk slices and each thread accumulates a 4 x 8 piece of M V^T in registers (fp32 FMA), adds it to the
// weight elements it loaded before the product, and stores them rounded.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "zo_elements.cuh"
#include "zo_kernels.h"
#include "zo_random.cuh"

namespace zk {

constexpr int kLowrankRows = 32;   // rows per block: 8 warps x 4 rows
constexpr int kLowrankCols = 256;  // columns per tile: each lane owns columns 4 lane .. +3 and 128 + 4 lane .. +3
constexpr int kRankChunk = 16;     // basis columns staged in shared memory at a time
static_assert(kThreads == 256 && kLowrankRows == 4 * (kThreads / 32) && kLowrankCols == 8 * 32, "thread tiling");

struct LowrankRow {  // one table row, 8 x int64 (cuda_backend.py builds it)
  int64_t tensor;    // index into the launch's LowrankPtrs
  int64_t row0, tile_begin, tile_end, d_out, d_in, rank, tensor_id;
};
static_assert(sizeof(LowrankRow) == 8 * sizeof(int64_t), "table layout");

// Stochastic-rounding words of the 4 elements from element index e0 (any e0: 4 consecutive indices span one or
// two Philox units), or zeros.
template <bool kRound>
__device__ __forceinline__ void rounding_words4(int64_t e0, uint32_t tensor_id, uint2 rounding_key, uint32_t (&r)[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) r[j] = 0u;
  if constexpr (kRound) {
    const uint4 x0 = unit_words(e0 >> 2, kRoundingStream, tensor_id, rounding_key);
    const int s = static_cast<int>(e0 & 3);
    if (s == 0) {
      r[0] = x0.x; r[1] = x0.y; r[2] = x0.z; r[3] = x0.w;
    } else {
      const uint4 x1 = unit_words((e0 >> 2) + 1, kRoundingStream, tensor_id, rounding_key);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int p = s + j;
        const uint4 x = p < 4 ? x0 : x1;
        const int i = p & 3;
        r[j] = i == 0 ? x.x : i == 1 ? x.y : i == 2 ? x.z : x.w;
      }
    }
  }
}

template <typename WT, bool REGEN, bool STOCHASTIC>
__global__ void __launch_bounds__(kThreads, 2)  // 2 blocks per SM (128 registers): one stages while one computes
    lowrank_kernel(const __grid_constant__ LowrankPtrs ptrs, const LowrankRow* __restrict__ table, Directions d,
                   uint2 key, uint2 rounding_key) {
  constexpr bool kRound = STOCHASTIC && !std::is_same<WT, float>::value;
  __shared__ __align__(16) float ms[kMaxLowrankRank][kLowrankRows];  // ms[j][i] = M[row0 + i, j]
  // vs[j][c] = V[col0 + c, jc + j]; rows padded by 4 floats: a warp's staging writes (16 entries of 2 columns)
  // hit 16 banks instead of 2, and rows stay 16-byte aligned for the product's float4 reads
  __shared__ __align__(16) float vs[kRankChunk][kLowrankCols + 4];
  const LowrankRow row = table[blockIdx.x];
  if (!d.all_finite()) return;  // a coefficient that is not finite vetoes every write (no host sync to raise)
  WT* w = reinterpret_cast<WT*>(ptrs.w[row.tensor]);
  const float* v = ptrs.v[row.tensor];
  const int r = static_cast<int>(row.rank);
  const int64_t d_in = row.d_in, d_out = row.d_out, row0 = row.row0;
  const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);

  // This block's rows of M: indices [row0 r, (row0 + 32) r) of the streams, row-major (row0 r is a multiple of 4).
  if constexpr (REGEN) {
    for (int u = threadIdx.x; u < kLowrankRows * r / 4; u += blockDim.x) {
      float m[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int k = 0; k < d.K; ++k) {
        const uint4 x = unit_words((row0 * r >> 2) + u, d.stream(k), tensor_id, key);
        const float c = d.coeff(k);
        const float2 a = box_muller_scaled(x.x, x.y, c), b = box_muller_scaled(x.z, x.w, c);
        m[0] += a.x; m[1] += a.y; m[2] += b.x; m[3] += b.y;
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int e = 4 * u + q, i = e / r;
        ms[e - i * r][i] = row0 + i < d_out ? m[q] : 0.0f;
      }
    }
  } else {
    const float* f = ptrs.f[row.tensor];
    for (int e = threadIdx.x; e < kLowrankRows * r; e += blockDim.x) {
      const int i = e / r;
      ms[e - i * r][i] = row0 + i < d_out ? f[(row0 + i) * r + (e - i * r)] : 0.0f;
    }
  }

  const int wy = threadIdx.x >> 5, lane = threadIdx.x & 31;  // rows row0 + 4 wy + a; columns below
  for (int64_t tile = row.tile_begin; tile < row.tile_end; ++tile) {
    const int64_t col0 = tile * kLowrankCols;
    WT raw[4][2][4];  // this thread's weight elements, loaded before the product
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int64_t rr = row0 + 4 * wy + a;
#pragma unroll
      for (int s = 0; s < 2; ++s)
        if (rr < d_out) load_raw<WT, 4>(w + rr * d_in, col0 + 128 * s + 4 * lane, d_in, raw[a][s]);
    }
    float acc[4][8];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
      for (int b = 0; b < 8; ++b) acc[a][b] = 0.0f;
    for (int jc = 0; jc < r; jc += kRankChunk) {
      const int width = min(kRankChunk, r - jc);
      __syncthreads();  // the last chunk's readers are done (and, the first time, ms is written)
      // all of a thread's staging loads in flight at once (one L2 latency per slice, not one per load); lanes on
      // consecutive basis entries: coalesced reads
#pragma unroll
      for (int q = 0; q < kLowrankCols * kRankChunk / kThreads; ++q) {
        const int e = threadIdx.x + q * kThreads, j = e % kRankChunk, c = e / kRankChunk;
        vs[j][c] = j < width && col0 + c < d_in ? v[(col0 + c) * r + jc + j] : 0.0f;
      }
      __syncthreads();
#pragma unroll 4
      for (int j = 0; j < width; ++j) {
        const float4 m4 = *reinterpret_cast<const float4*>(&ms[jc + j][4 * wy]);  // one address per warp
        const float4 v0 = *reinterpret_cast<const float4*>(&vs[j][4 * lane]);
        const float4 v1 = *reinterpret_cast<const float4*>(&vs[j][128 + 4 * lane]);
        const float mv[4] = {m4.x, m4.y, m4.z, m4.w}, vv[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
          for (int b = 0; b < 8; ++b) acc[a][b] = fmaf(mv[a], vv[b], acc[a][b]);
      }
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int64_t rr = row0 + 4 * wy + a;
      if (rr >= d_out) continue;
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t col = col0 + 128 * s + 4 * lane;
        if (col >= d_in) continue;
        float out[4];
        to_f32<WT, 4>(raw[a][s], out);
#pragma unroll
        for (int b = 0; b < 4; ++b) out[b] += acc[a][4 * s + b];
        uint32_t words[4];
        rounding_words4<kRound>(rr * d_in + col, tensor_id, rounding_key, words);
        store_group<WT, 4>(w + rr * d_in, col, d_in, out, words, kRound);
      }
    }
  }
}

template <typename WT>
static cudaError_t launch_lowrank_typed(const LowrankArgs& a, cudaStream_t stream) {
  const LowrankRow* table = reinterpret_cast<const LowrankRow*>(a.table);
  const dim3 grid(static_cast<unsigned>(a.rows)), block(kThreads);
  const uint2 key = make_uint2(a.k0, a.k1), rkey = make_uint2(a.rk0, a.rk1);
  const Directions d{a.coeffs, a.scale, a.streams, a.stream0, a.K};
#define ZK_LAUNCH(R, S) lowrank_kernel<WT, R, S><<<grid, block, 0, stream>>>(a.ptrs, table, d, key, rkey)
  if (a.regenerate) {
    if (a.stochastic) ZK_LAUNCH(true, true); else ZK_LAUNCH(true, false);
  } else {
    if (a.stochastic) ZK_LAUNCH(false, true); else ZK_LAUNCH(false, false);
  }
#undef ZK_LAUNCH
  return cudaGetLastError();
}

cudaError_t launch_lowrank(const LowrankArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  return with_element_type(a.w_dtype, [&](auto w) { return launch_lowrank_typed<decltype(w)>(a, stream); });
}

}  // namespace zk
