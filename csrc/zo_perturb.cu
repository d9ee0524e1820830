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

// The table row's elements as seen by one block, row-relative: element e of the row is local index local0 + e of
// its tensor and exists for lo <= e < hi. Indices inside a row are 32-bit (a row is at most CHUNK elements); the
// vector alignment of the row's start is tested once (G elements from a multiple of G keep it).
template <typename DT, typename ST, int G>
struct RowAccess {
  DT* dst;
  const ST* src;
  int lo, hi;
  bool aligned;
  __device__ __forceinline__ RowAccess(const TensorPtrs& ptrs, const ChunkRow& row)
      : dst(reinterpret_cast<DT*>(ptrs.dst[row.tensor]) + row.local0),
        src(reinterpret_cast<const ST*>(ptrs.src[row.tensor]) + row.local0),
        lo(row.local0 < 0 ? static_cast<int>(-row.local0) : 0),
        hi(static_cast<int>(row.numel - row.local0 < row.length ? row.numel - row.local0 : row.length)),
        aligned(vec_aligned<DT, G>(dst) && vec_aligned<ST, G>(src)) {}
  __device__ __forceinline__ bool interior(int e) const { return aligned && e >= lo && e + G <= hi; }
  __device__ __forceinline__ void load(int e, ST (&raw)[G]) const {
    if (interior(e)) load_vec<ST, G>(src + e, raw);
    else load_elems<ST, G>(src + e, lo - e, hi - e, raw);
  }
  // v rounded to DT (stochastic: with the rounding words of global index 4 quad on, one Philox call per 8
  // elements; quad is even) into row element e.
  template <bool kRound>
  __device__ __forceinline__ void store(int e, const float (&v)[G], uint64_t quad, uint32_t tensor_id,
                                        uint2 rounding_key) const {
    static_assert(G % 8 == 0, "groups hold whole rounding units");
    DT out[G];
#pragma unroll
    for (int q = 0; q < G / 8; ++q) {
      uint4 x = make_uint4(0, 0, 0, 0);
      if constexpr (kRound)
        x = unit_words(static_cast<int64_t>((quad >> 1) + q), kRoundingStream, tensor_id, rounding_key);
      uint32_t r[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) r[i] = rounding_half(x, i);
      round_group<DT, 8>(reinterpret_cast<const float(&)[8]>(v[8 * q]), r, kRound,
                         reinterpret_cast<DT(&)[8]>(out[8 * q]));
    }
    if (interior(e)) store_vec<DT, G>(dst + e, out);
    else store_elems<DT, G>(dst + e, lo - e, hi - e, out);
  }
};

// The row's first element's global index / 4 (spans start on multiples of the group, >= 8 elements).
__device__ __forceinline__ uint64_t first_quad(const ChunkRow& row) {
  return static_cast<uint64_t>(row.offset + row.local0) >> 2;
}

// Each thread owns groups of G consecutive elements, a block apart. With kLoadAhead the next group's bytes are
// loaded (raw, G * sizeof(ST) bytes of registers) before this group's math, so each thread keeps a load in flight
// while it computes (H100: bench/NOTES.md). add_direction(c, stream, quad, acc) adds one direction with
// coefficient c to the group whose first element has global index 4 quad.
template <int G, bool kLoadAhead, typename DT, typename ST, bool kRound, bool kUnroll2, typename AddDirection>
__device__ __forceinline__ void thread_groups(const TensorPtrs& ptrs, const ChunkRow& row, const Directions& d,
                                              uint2 rounding_key, AddDirection add_direction) {
  const RowAccess<DT, ST, G> io(ptrs, row);
  const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);
  const uint64_t quad0 = first_quad(row);
  const int groups = (static_cast<int>(row.length) + G - 1) / G;
  const float c0 = d.coeff(0);
  const uint32_t s0 = d.stream(0);
  ST next[G];
  if (kLoadAhead && static_cast<int>(threadIdx.x) < groups) io.load(G * threadIdx.x, next);
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    const int e = G * g;
    const uint64_t quad = quad0 + static_cast<uint32_t>(G / 4 * g);
    if (!kLoadAhead) io.load(e, next);
    float acc[G];
    to_f32<ST, G>(next, acc);
    if (kLoadAhead && g + kThreads < groups) io.load(e + G * kThreads, next);
    d.template for_each<kUnroll2>(c0, s0, [&](float c, uint32_t stream) { add_direction(c, stream, quad, acc); });
    io.template store<kRound>(e, acc, quad, tensor_id, rounding_key);
  }
}

// Gaussian: groups of 8 elements (two Philox units; 16-byte bf16/fp16 vectors). quad is even, so the second unit's
// low word is quad | 1 with the same high word.
template <typename DT, typename ST, bool kRound, bool kMulti>
__device__ __forceinline__ void gaussian_groups(const TensorPtrs& ptrs, const ChunkRow& row, const Directions& d,
                                                uint2 key, uint2 rounding_key) {
  const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);
  thread_groups<8, true, DT, ST, kRound, kMulti>(ptrs, row, d, rounding_key,
                                         [&](float c, uint32_t stream, uint64_t quad, float (&acc)[8]) {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const uint4 x = philox4x32_10(make_uint4(static_cast<uint32_t>(quad) | q, static_cast<uint32_t>(quad >> 32),
                                               stream, tensor_id), key);
      add_scaled_normals(x, c, acc + 4 * q);
    }
  });
}

// Rademacher with stochastic rounding: groups of a word's 32 consecutive elements (one Philox call per direction),
// loaded when used: 64 bytes ahead do not fit the 64-register cap of kMinBlocksPerSM (they spill).
template <typename DT, typename ST, bool kRound>
__device__ __forceinline__ void rademacher_thread_words(const TensorPtrs& ptrs, const ChunkRow& row, const Directions& d,
                                                        uint2 key, uint2 rounding_key) {
  const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);
  thread_groups<32, false, DT, ST, kRound, false>(ptrs, row, d, rounding_key,
                                           [&](float c, uint32_t stream, uint64_t quad, float (&acc)[32]) {
    const uint4 x = unit_words(static_cast<int64_t>(quad >> 5), stream, tensor_id, key);  // unit = global / 128
    const int which = static_cast<int>((quad >> 3) & 3);
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
__device__ __forceinline__ void rademacher_warp_tiles(const TensorPtrs& ptrs, const ChunkRow& row, const Directions& d,
                                                      uint2 key, uint2 rounding_key) {
  constexpr int kTile = 1024, kPiece = 8, kPieces = 4;
  const RowAccess<DT, ST, kPiece> io(ptrs, row);
  const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);
  const uint64_t quad0 = first_quad(row);  // a multiple of 32: spans start on multiples of 128 elements
  const int lane = threadIdx.x & 31, length = static_cast<int>(row.length);
  const int tiles = (length + kTile - 1) / kTile, stride = kThreads >> 5;
  const float c0 = d.coeff(0);
  const uint32_t s0 = d.stream(0);
  ST next[kPieces][kPiece];  // the next tile's pieces, loaded before this tile's math (as in thread_groups)
  auto load_tile = [&](int t) {
#pragma unroll
    for (int j = 0; j < kPieces; ++j) {
      const int e = t * kTile + 256 * j + kPiece * lane;
      if (e < length) io.load(e, next[j]);
    }
  };
  if (static_cast<int>(threadIdx.x >> 5) < tiles) load_tile(threadIdx.x >> 5);
  for (int t = threadIdx.x >> 5; t < tiles; t += stride) {  // warp-uniform: shuffles need the warp
    float acc[kPieces][kPiece];
#pragma unroll
    for (int j = 0; j < kPieces; ++j) to_f32<ST, kPiece>(next[j], acc[j]);
    if (t + stride < tiles) load_tile(t + stride);
    const uint64_t unit = (quad0 >> 5) + static_cast<uint32_t>(8 * t + (lane >> 2));  // word `lane` of the tile
    d.for_each(c0, s0, [&](float c, uint32_t stream) {
      const uint4 x = unit_words(static_cast<int64_t>(unit), stream, tensor_id, key);
      const int which = lane & 3;
      const uint32_t mine = which == 0 ? x.x : which == 1 ? x.y : which == 2 ? x.z : x.w;
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        // piece j of this lane: elements 256 j + 8 lane + b, bits 8 (lane & 3) + b of word 8 j + lane / 4
        const uint32_t byte = (__shfl_sync(0xFFFFFFFFu, mine, 8 * j + (lane >> 2)) >> (8 * (lane & 3))) & 0xFFu;
#pragma unroll
        for (int b = 0; b < kPiece; ++b) acc[j][b] += ((byte >> b) & 1u) ? c : -c;
      }
    });
#pragma unroll
    for (int j = 0; j < kPieces; ++j) {
      const int e = t * kTile + 256 * j + kPiece * lane;
      if (e >= length) continue;
      io.template store<kRound>(e, acc[j], quad0 + static_cast<uint32_t>(e / 4), tensor_id, rounding_key);
    }
  }
}

// Blocks per SM the compiler must fit (a register cap), per layout, from H100 measurements (bench/NOTES.md):
// Gaussian with nearest rounding at 5 blocks (48 registers, no spill): 1.05-1.06x the copy roofline against 1.15x
// for the same code at 3 blocks (6 blocks: the same time); Rademacher thread words (stochastic rounding) at 4 blocks
// (64 registers): 1.08x against 1.20x uncapped. The other layouts measured best uncapped.
// The Gaussian kernel for K > 1 (MULTI) at 4 blocks (64 registers, no spill): K = 16 nearest 20.1-20.2 ms against
// 20.6 uncapped; 5 blocks matched it at nearest rounding and lost 1% with stochastic rounding (21.8 against 21.5).
template <typename DT, bool GAUSSIAN, bool STOCHASTIC, bool MULTI>
constexpr int kMinBlocksPerSM = std::is_same<DT, float>::value ? 1 : MULTI ? 4 : GAUSSIAN ? (STOCHASTIC ? 1 : 5)
                                                                                   : STOCHASTIC ? 4 : 1;

// One block per table row.
// MULTI (Gaussian only): the kernel for K > 1, with two directions per loop trip (so that their Philox chains
// interleave): K = 16 nearest 20.2 ms on the H100 against 21.4 with one direction per trip (bench/NOTES.md); the
// same for Rademacher was slower.
template <typename DT, typename ST, bool GAUSSIAN, bool STOCHASTIC, bool MULTI>
__global__ void __launch_bounds__(kThreads, (kMinBlocksPerSM<DT, GAUSSIAN, STOCHASTIC, MULTI>))
    combine_kernel(const __grid_constant__ TensorPtrs ptrs, const ChunkRow* __restrict__ table, Directions d, uint2 key,
                   uint2 rounding_key) {
  constexpr bool kRound = STOCHASTIC && !std::is_same<DT, float>::value;
  const ChunkRow row = table[blockIdx.x];
  if (!d.all_finite()) return;  // a coefficient that is not finite vetoes every write (no host sync to raise)
  if constexpr (GAUSSIAN) {
    gaussian_groups<DT, ST, kRound, MULTI>(ptrs, row, d, key, rounding_key);
  } else if constexpr (kRound) {
    rademacher_thread_words<DT, ST, kRound>(ptrs, row, d, key, rounding_key);
  } else {
    rademacher_warp_tiles<DT, ST, kRound>(ptrs, row, d, key, rounding_key);
  }
}

template <typename DT, typename ST>
static cudaError_t launch_typed(const CombineArgs& a, cudaStream_t stream) {
  const ChunkRow* table = reinterpret_cast<const ChunkRow*>(a.table);
  const dim3 grid(static_cast<unsigned>(a.rows)), block(kThreads);
  const uint2 key = make_uint2(a.k0, a.k1), rkey = make_uint2(a.rk0, a.rk1);
  const Directions d{a.coeffs, a.scale, a.streams, a.stream0, a.K};
#define ZK_LAUNCH(G, S, M) combine_kernel<DT, ST, G, S, M><<<grid, block, 0, stream>>>(a.ptrs, table, d, key, rkey)
  if (a.gaussian && a.K > 1) {
    if (a.stochastic) ZK_LAUNCH(true, true, true); else ZK_LAUNCH(true, false, true);
  } else if (a.gaussian) {
    if (a.stochastic) ZK_LAUNCH(true, true, false); else ZK_LAUNCH(true, false, false);
  } else {
    if (a.stochastic) ZK_LAUNCH(false, true, false); else ZK_LAUNCH(false, false, false);
  }
#undef ZK_LAUNCH
  return cudaGetLastError();
}

cudaError_t launch_combine(const CombineArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  return with_element_type(a.dst_dtype, [&](auto dst) {
    return with_element_type(a.src_dtype,
                             [&](auto src) { return launch_typed<decltype(dst), decltype(src)>(a, stream); });
  });
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
