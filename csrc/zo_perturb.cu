// Multi-tensor perturb_/combine_/perturbed_copy_ for the CUDA backend: one block per chunk of a host-built table
// (zokernels/backends/cuda_backend.py), the K directions regenerated in registers, one read and one write per
// element. Up to kMaxTensorsPerLaunch tensors per launch; their addresses are kernel parameters.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "zo_elements.cuh"
#include "zo_kernels.h"
#include "zo_random.cuh"

namespace zk {

struct ChunkRow {  // one table row, 6 x int64 (cuda_backend.py builds it)
  int64_t tensor;   // index into the launch's TensorPtrs
  int64_t local0;   // first local index of the chunk (negative: the span starts on a unit boundary)
  int64_t numel, offset, tensor_id, length;
};
static_assert(sizeof(ChunkRow) == 6 * sizeof(int64_t), "table layout");

// Stochastic-rounding words of the G elements from global index `global` (a multiple of 4), or zeros.
template <bool kRound, int G>
__device__ __forceinline__ void rounding_words(int64_t global, uint32_t tensor_id, uint2 rounding_key, uint32_t (&r)[G]) {
#pragma unroll
  for (int q = 0; q < G / 4; ++q) {
    uint4 x = make_uint4(0, 0, 0, 0);
    if constexpr (kRound) x = unit_words((global >> 2) + q, kRoundingStream, tensor_id, rounding_key);
    r[4 * q] = x.x; r[4 * q + 1] = x.y; r[4 * q + 2] = x.z; r[4 * q + 3] = x.w;
  }
}

// Each thread owns groups of G consecutive elements, a blockDim apart. With kLoadAhead the next group's bytes are
// loaded (raw, G * sizeof(ST) bytes of registers) before this group's math, so each thread keeps a load in flight
// while it computes (H100: bench/NOTES.md). add_direction(k, global, acc) adds direction k to the group that starts
// at global index `global`.
template <int G, bool kLoadAhead, typename DT, typename ST, bool kRound, typename AddDirection>
__device__ __forceinline__ void thread_groups(DT* dst, const ST* src, const ChunkRow& row, const Directions& d,
                                              uint32_t tensor_id, uint2 rounding_key, AddDirection add_direction) {
  const int64_t groups = (row.length + G - 1) / G, stride = blockDim.x;
  ST next[G];
  if (kLoadAhead && threadIdx.x < groups) load_raw<ST, G>(src, row.local0 + threadIdx.x * G, row.numel, next);
  for (int64_t g = threadIdx.x; g < groups; g += stride) {
    const int64_t local = row.local0 + g * G;
    const int64_t global = row.offset + local;  // a multiple of G
    if (!kLoadAhead) load_raw<ST, G>(src, local, row.numel, next);
    float acc[G];
    to_f32<ST, G>(next, acc);
    if (kLoadAhead && g + stride < groups) load_raw<ST, G>(src, local + stride * G, row.numel, next);
    for (int k = 0; k < d.K; ++k) add_direction(k, global, acc);
    uint32_t r[G];
    rounding_words<kRound>(global, tensor_id, rounding_key, r);
    store_group<DT, G>(dst, local, row.numel, acc, r, kRound);
  }
}

// Gaussian: groups of 8 elements (two Philox calls; 16-byte bf16/fp16 vectors).
template <typename DT, typename ST, bool kRound>
__device__ __forceinline__ void gaussian_groups(DT* dst, const ST* src, const ChunkRow& row, const Directions& d,
                                                uint32_t tensor_id, uint2 key, uint2 rounding_key) {
  thread_groups<8, true, DT, ST, kRound>(dst, src, row, d, tensor_id, rounding_key,
                                         [&](int k, int64_t global, float (&acc)[8]) {
    const float c = d.coeff(k);
    const uint32_t stream = d.stream(k);
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const uint4 x = unit_words((global >> 2) + q, stream, tensor_id, key);
      const float2 a = box_muller_scaled(x.x, x.y, c), b = box_muller_scaled(x.z, x.w, c);
      acc[4 * q] += a.x; acc[4 * q + 1] += a.y; acc[4 * q + 2] += b.x; acc[4 * q + 3] += b.y;
    }
  });
}

// Rademacher with stochastic rounding: groups of a word's 32 consecutive elements (one Philox call per direction),
// loaded when used: 64 bytes ahead do not fit the 64-register cap of kMinBlocksPerSM (they spill).
template <typename DT, typename ST, bool kRound>
__device__ __forceinline__ void rademacher_thread_words(DT* dst, const ST* src, const ChunkRow& row, const Directions& d,
                                                        uint32_t tensor_id, uint2 key, uint2 rounding_key) {
  thread_groups<32, false, DT, ST, kRound>(dst, src, row, d, tensor_id, rounding_key,
                                           [&](int k, int64_t global, float (&acc)[32]) {
    const float c = d.coeff(k);
    const uint4 x = unit_words(global >> 7, d.stream(k), tensor_id, key);
    const int which = static_cast<int>((global >> 5) & 3);
    const uint32_t word = which == 0 ? x.x : which == 1 ? x.y : which == 2 ? x.z : x.w;
#pragma unroll
    for (int j = 0; j < 32; ++j) acc[j] += ((word >> j) & 1u) ? c : -c;
  });
}

// Rademacher with nearest rounding: a warp owns tiles of 1024 elements (32 words, 8 Philox units). Lane L
// computes word L (one Philox call per direction, as above) and the words reach the lanes that hold their bits
// by shuffles, so that each lane's accesses are 8-element pieces L, L + 32, L + 64, L + 96 of the tile: every
// warp access is contiguous (rademacher_thread_words' lanes are 32 elements apart). Measured on the H100
// (bench/NOTES.md): with nearest rounding this layout beat thread words (1.10x the copy roofline against 1.25x;
// 1.035x once the next tile is loaded ahead), with stochastic rounding it lost (1.27x against 1.07x), hence one
// layout per rounding.
template <typename DT, typename ST, bool kRound>
__device__ __forceinline__ void rademacher_warp_tiles(DT* dst, const ST* src, const ChunkRow& row, const Directions& d,
                                                      uint32_t tensor_id, uint2 key, uint2 rounding_key) {
  constexpr int kTile = 1024, kPiece = 8, kPieces = 4;
  const int lane = threadIdx.x & 31;
  const int64_t tiles = (row.length + kTile - 1) / kTile, end = row.local0 + row.length;
  const int64_t stride = blockDim.x >> 5;
  ST next[kPieces][kPiece];  // the next tile's pieces, loaded before this tile's math (as in thread_groups)
  auto load_tile = [&](int64_t t) {
#pragma unroll
    for (int j = 0; j < kPieces; ++j) {
      const int64_t local = row.local0 + t * kTile + 256 * j + kPiece * lane;
      if (local < end) load_raw<ST, kPiece>(src, local, row.numel, next[j]);
    }
  };
  if ((threadIdx.x >> 5) < tiles) load_tile(threadIdx.x >> 5);
  for (int64_t t = threadIdx.x >> 5; t < tiles; t += stride) {  // warp-uniform: shuffles need the warp
    const int64_t base = row.local0 + t * kTile;
    const int64_t gbase = row.offset + base;  // a multiple of 128
    float acc[kPieces][kPiece];
#pragma unroll
    for (int j = 0; j < kPieces; ++j) to_f32<ST, kPiece>(next[j], acc[j]);
    if (t + stride < tiles) load_tile(t + stride);
    for (int k = 0; k < d.K; ++k) {
      const float c = d.coeff(k);
      const uint4 x = unit_words((gbase >> 7) + (lane >> 2), d.stream(k), tensor_id, key);
      const int which = lane & 3;
      const uint32_t mine = which == 0 ? x.x : which == 1 ? x.y : which == 2 ? x.z : x.w;  // word `lane` of the tile
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        // piece j of this lane: elements 256 j + 8 lane + b, bits 8 (lane & 3) + b of word 8 j + lane / 4
        const uint32_t byte = (__shfl_sync(0xFFFFFFFFu, mine, 8 * j + (lane >> 2)) >> (8 * (lane & 3))) & 0xFFu;
#pragma unroll
        for (int b = 0; b < kPiece; ++b) acc[j][b] += ((byte >> b) & 1u) ? c : -c;
      }
    }
#pragma unroll
    for (int j = 0; j < kPieces; ++j) {
      const int64_t local = base + 256 * j + kPiece * lane;
      if (local >= end) continue;
      uint32_t r[kPiece];
      rounding_words<kRound>(row.offset + local, tensor_id, rounding_key, r);
      store_group<DT, kPiece>(dst, local, row.numel, acc[j], r, kRound);
    }
  }
}

// Rademacher thread words (stochastic rounding) capped at 64 registers, 4 blocks per SM: 1.08x the copy roofline
// against 1.20x uncapped on the H100 (bench/NOTES.md). The other layouts measured best uncapped.
template <typename DT, bool GAUSSIAN, bool STOCHASTIC>
constexpr int kMinBlocksPerSM = !GAUSSIAN && STOCHASTIC && !std::is_same<DT, float>::value ? 4 : 1;

// One block per table row.
template <typename DT, typename ST, bool GAUSSIAN, bool STOCHASTIC>
__global__ void __launch_bounds__(kThreads, (kMinBlocksPerSM<DT, GAUSSIAN, STOCHASTIC>))
    combine_kernel(const __grid_constant__ TensorPtrs ptrs, const ChunkRow* __restrict__ table, Directions d, uint2 key,
                   uint2 rounding_key) {
  constexpr bool kRound = STOCHASTIC && !std::is_same<DT, float>::value;
  const ChunkRow row = table[blockIdx.x];
  if (!d.all_finite()) return;  // a coefficient that is not finite vetoes every write (no host sync to raise)
  DT* dst = reinterpret_cast<DT*>(ptrs.dst[row.tensor]);
  const ST* src = reinterpret_cast<const ST*>(ptrs.src[row.tensor]);
  const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);
  if constexpr (GAUSSIAN) {
    gaussian_groups<DT, ST, kRound>(dst, src, row, d, tensor_id, key, rounding_key);
  } else if constexpr (kRound) {
    rademacher_thread_words<DT, ST, kRound>(dst, src, row, d, tensor_id, key, rounding_key);
  } else {
    rademacher_warp_tiles<DT, ST, kRound>(dst, src, row, d, tensor_id, key, rounding_key);
  }
}

template <typename DT, typename ST>
static cudaError_t launch_typed(const CombineArgs& a, cudaStream_t stream) {
  const ChunkRow* table = reinterpret_cast<const ChunkRow*>(a.table);
  const dim3 grid(static_cast<unsigned>(a.rows)), block(kThreads);
  const uint2 key = make_uint2(a.k0, a.k1), rkey = make_uint2(a.rk0, a.rk1);
  const Directions d{a.coeffs, a.scale, a.streams, a.stream0, a.K};
#define ZK_LAUNCH(G, S) combine_kernel<DT, ST, G, S><<<grid, block, 0, stream>>>(a.ptrs, table, d, key, rkey)
  if (a.gaussian) {
    if (a.stochastic) ZK_LAUNCH(true, true); else ZK_LAUNCH(true, false);
  } else {
    if (a.stochastic) ZK_LAUNCH(false, true); else ZK_LAUNCH(false, false);
  }
#undef ZK_LAUNCH
  return cudaGetLastError();
}

template <typename DT>
static cudaError_t launch_dst(const CombineArgs& a, cudaStream_t stream) {
  switch (a.src_dtype) {
    case DType::kFloat32: return launch_typed<DT, float>(a, stream);
    case DType::kBFloat16: return launch_typed<DT, __nv_bfloat16>(a, stream);
    case DType::kFloat16: return launch_typed<DT, __half>(a, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_combine(const CombineArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  switch (a.dst_dtype) {
    case DType::kFloat32: return launch_dst<float>(a, stream);
    case DType::kBFloat16: return launch_dst<__nv_bfloat16>(a, stream);
    case DType::kFloat16: return launch_dst<__half>(a, stream);
  }
  return cudaErrorInvalidValue;
}

__global__ void philox_kernel(const int64_t* __restrict__ counters, int64_t* __restrict__ out, int64_t n, uint2 key) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint4 x = philox4x32_10(make_uint4(static_cast<uint32_t>(counters[i]), static_cast<uint32_t>(counters[n + i]),
                                           static_cast<uint32_t>(counters[2 * n + i]),
                                           static_cast<uint32_t>(counters[3 * n + i])), key);
  out[i] = x.x; out[n + i] = x.y; out[2 * n + i] = x.z; out[3 * n + i] = x.w;
}

cudaError_t launch_philox(const int64_t* counters, int64_t* out, int64_t n, uint32_t k0, uint32_t k1,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  philox_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(counters, out, n, make_uint2(k0, k1));
  return cudaGetLastError();
}

}  // namespace zk
