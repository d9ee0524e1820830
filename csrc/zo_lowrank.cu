// Multi-tensor low-rank update for the CUDA backend (lowrank_combine_ / lowrank_add_): W_t += M_t V_t^T in one
// pass over each weight, M_t [d_out, r] = sum_k c_k N_{t,k} regenerated from the counter contract (or an explicit
// factor), V_t [d_in, r] a float32 basis. One block per table row (zokernels/backends/cuda_backend.py): rows
// [row0, row0 + kLowrankRows) of weight t and its column tiles [tile_begin, tile_end) of kLowrankCols. The
// block forms its rows of M once (transposed, in shared memory), then per column tile stages V's rows in
// kRankChunk slices and each thread accumulates a 4 x 8 piece of M V^T in registers (fp32 FMA), adds it to the
// weight elements it loaded before the product, and stores them rounded. That FMA kernel takes float32 weights
// and ranks above 64; 16-bit weights at r <= 64 take the tensor-core kernel further down.
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

// Stochastic-rounding words of the N <= 8 elements from element index e0, or zeros. One Philox call where they lie
// in one rounding unit (e0 % 8 + N <= 8: every group of a row when d_in is a multiple of 8), else two.
template <int N, bool kRound>
__device__ __forceinline__ void rounding_words(int64_t e0, uint32_t tensor_id, uint2 rounding_key, uint32_t (&r)[N]) {
  static_assert(N <= 8, "at most two units");
#pragma unroll
  for (int j = 0; j < N; ++j) r[j] = 0u;
  if constexpr (kRound) {
    const uint4 x0 = unit_words(e0 >> 3, kRoundingStream, tensor_id, rounding_key);
    const int s = static_cast<int>(e0 & 7);
    if (s == 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) r[j] = rounding_half(x0, j);
    } else {
      const uint4 x1 = s + N > 8 ? unit_words((e0 >> 3) + 1, kRoundingStream, tensor_id, rounding_key) : x0;
#pragma unroll
      for (int j = 0; j < N; ++j) r[j] = rounding_half(s + j < 8 ? x0 : x1, (s + j) & 7);
    }
  }
}

// Rows [row0, row0 + ROWS) of the block's factor M (zero for rows >= d_out), each entry handed once to
// put(i, j, M[row0 + i, j]): regenerated from the streams (indices [row0 r, (row0 + ROWS) r), row-major; row0 is a
// multiple of ROWS, itself a multiple of 4) or read from the explicit factor f [d_out, r].
template <int ROWS, bool REGEN, typename Put>
__device__ __forceinline__ void form_factor_rows(const LowrankRow& row, const float* __restrict__ f, const Directions& d,
                                                 uint2 key, Put put) {
  const int r = static_cast<int>(row.rank);
  const int64_t d_out = row.d_out, row0 = row.row0;
  if constexpr (REGEN) {
    const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);
    for (int u = threadIdx.x; u < ROWS * r / 4; u += kThreads) {
      float m[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int k = 0; k < d.K; ++k) {
        const uint4 x = unit_words((row0 * r >> 2) + u, d.stream(k), tensor_id, key);
        add_scaled_normals(x, d.coeff(k), m);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int e = 4 * u + q, i = e / r;
        put(i, e - i * r, row0 + i < d_out ? m[q] : 0.0f);
      }
    }
  } else {
    for (int e = threadIdx.x; e < ROWS * r; e += kThreads) {
      const int i = e / r;
      put(i, e - i * r, row0 + i < d_out ? f[(row0 + i) * r + (e - i * r)] : 0.0f);
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

  form_factor_rows<kLowrankRows, REGEN>(row, ptrs.f[row.tensor], d, key,
                                        [&](int i, int j, float x) { ms[j][i] = x; });

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
        rounding_words<4, kRound>(rr * d_in + col, tensor_id, rounding_key, words);
        store_group<WT, 4>(w + rr * d_in, col, d_in, out, words, kRound);
      }
    }
  }
}

// Tensor-core variant for 16-bit weights at ranks <= kTcMaxRank: mma.sync m16n8k8 on TF32 operands (M and V
// rounded to nearest, 10-bit mantissas: cuda_backend.lowrank_product_error), or from padded rank kTcHalfMinRank
// up m16n8k16 on fp16 operands scaled by powers of two; fp32 accumulation. One block per table row of
// tc_rows(RP, STOCHASTIC) rows (M formed once, kept as fragments in shared memory) and column tiles of
// tc_cols(RP, STOCHASTIC) (the next tile's weights and basis rows loaded during this tile's product and rounding);
// each warp takes 16 rows of 64 columns of a tile. Columns are permuted inside those 64 so that the accumulator fragments are
// contiguous in memory and every load or store instruction covers whole 32-byte sectors: n-tile j's column n is
// column 32 (j / 4) + 8 (n / 2) + 2 (j % 4) + n % 2, so lane (g, t) holds columns 8 t .. 8 t + 7 (chunk 0) and
// 32 + 8 t .. + 7 (chunk 1) of rows g and g + 8. Its weight elements are then one 16-byte vector per chunk and
// row, the four lanes of a row cover 64 contiguous bytes per instruction (before: 16 t .. 16 t + 15, half sectors
// per instruction, twice the L2 store requests; bench/NOTES.md, thirteenth session), and each Philox unit of the
// stochastic-rounding words (8 consecutive elements) belongs to one lane: no word is computed twice and none
// moves between lanes.
// Block geometry per padded rank and rounding: tall (128 rows, 64-column tiles: warp w takes rows 16 w .. + 15) or, at padded
// ranks <= kTcWideMaxRank, wide (64 rows, 128-column tiles: warp w takes rows 16 (w % 4) .. + 15 and the tile's
// columns 64 (w / 4) .. + 63). Every warp computes a 16 x 64 piece either way.
// (Deep blocks of 256 rows and 16 warps at r >= 32, each tile's basis staged once for twice the rows, were
// slower on the H100: r = 64 2.113 -> 2.159 device ms nearest, bench/NOTES.md.)
// At a prepared rank and rounding (kTcPreparedRows*, csrc/zo_kernels.h: 64 x 128 blocks at r = 16 and 32, and at
// r = 64 with stochastic rounding) each warp reads its 64-column piece's B fragments from global memory (L1), written per launch by
// lowrank_basis_fragments_kernel; none staged, no barrier per tile. H200, OPT-1.3B's linears, K = 1: r = 32 in
// 32 x 256 blocks (512-byte row segments) nearest 1.360, stochastic 1.510 device ms against 1.408 / 1.734 on staged
// 128 x 64 tiles (twenty-fourth session); r = 64 stochastic in 64 x 128 blocks 1.762 against staged 1.897 (its
// nearest 1.718 against 1.542; twenty-sixth session; bench/NOTES.md).
__host__ __device__ constexpr bool tc_valid_rows(int rows) {
  return rows == 0 || rows == 32 || rows == 64 || rows == 128;
}
static_assert(tc_valid_rows(kTcPreparedRowsR16) && tc_valid_rows(kTcPreparedRowsR16Sr) &&
                  tc_valid_rows(kTcPreparedRowsR32) && tc_valid_rows(kTcPreparedRowsR32Sr) &&
                  tc_valid_rows(kTcPreparedRowsR64) && tc_valid_rows(kTcPreparedRowsR64Sr),
              "prepared rows per block: 0, 32, 64 or 128");
__host__ __device__ constexpr int tc_prepared_rows(int rp, bool sr) {
  return rp == 16   ? (sr ? kTcPreparedRowsR16Sr : kTcPreparedRowsR16)
         : rp == 32 ? (sr ? kTcPreparedRowsR32Sr : kTcPreparedRowsR32)
         : rp == 64 ? (sr ? kTcPreparedRowsR64Sr : kTcPreparedRowsR64)
                    : 0;
}
__host__ __device__ constexpr bool tc_prepared(int rp, bool sr) { return tc_prepared_rows(rp, sr) != 0; }
__host__ __device__ constexpr bool tc_wide(int rp, bool sr) { return !tc_prepared(rp, sr) && rp <= kTcWideMaxRank; }
__host__ __device__ constexpr int tc_rows(int rp, bool sr) {
  return tc_prepared(rp, sr) ? tc_prepared_rows(rp, sr) : tc_wide(rp, sr) ? 64 : 128;
}
__host__ __device__ constexpr int tc_cols(int rp, bool sr) { return 8192 / tc_rows(rp, sr); }  // 8 warps of 16 x 64
static_assert(kThreads == 256, "8 warps of 16 x 64 (rows / 16 x columns / 64 = 8 in every geometry)");

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t y;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(y) : "f"(x));
  return y;
}

// c += a b for one m16n8k8 tile (fragments as the PTX ISA's mma.m16n8k8 .tf32 layout).
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], float b0, float b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
}

// c += a b for one m16n8k16 tile on fp16 operands (fragments as the PTX ISA's mma.m16n8k16 .f16 layout: a holds
// rows g, g + 8 at k 2 t, 2 t + 1 and then 2 t + 8, + 9 as half pairs; b0 and b1 k 2 t, + 1 and 2 t + 8, + 9 of
// column g). The accumulator layout is that of m16n8k8.
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// (s, 1 / s) for amax_bits, the bits of max|x| (non-negative float; NaN compares largest): s the power of two
// with amax < s <= 2 amax (at most 2^127), as triton_backend._pow2_scale, so |x / s| < 1 fits fp16 exactly scaled.
__device__ __forceinline__ float2 pow2_scale(uint32_t amax_bits) {
  const uint32_t e = min((amax_bits >> 23) & 0xFFu, 253u);
  return make_float2(__uint_as_float((e + 1) << 23), __uint_as_float((253 - e) << 23));
}

// 16 bytes at p (aligned), one st.global.v4: with the weights of the next tile in flight, ptxas split the
// vector store of a plain assignment into four 4-byte stores (H100, nearest rounding: 1.5x slower; bench/NOTES.md).
template <typename T>
__device__ __forceinline__ void store_16_bytes(T* p, const T (&v)[16 / sizeof(T)]) {
  const uint4 x = *reinterpret_cast<const uint4*>(v);
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(x.x), "r"(x.y), "r"(x.z), "r"(x.w) : "memory");
}

// 16 bytes at p (aligned) with L2's 256-byte prefetch hint: a tile's segment of a weight row is 128 bytes, so the
// hint brings the neighbouring tile's segment of that row from DRAM with this one's.
template <typename T>
__device__ __forceinline__ void load_16_bytes_l2_256(const T* p, T (&v)[16 / sizeof(T)]) {
  uint4 x;
  asm("ld.global.L2::256B.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(x.x), "=r"(x.y), "=r"(x.z), "=r"(x.w) : "l"(p));
  *reinterpret_cast<uint4*>(v) = x;
}

// Where basis entry V[col0 + c, k] of a staged tile goes: the B fragments of lane (g, t) for k step s and
// n-tiles 2 p, 2 p + 1 are one float4 (b0, b1 of n-tile 2 p, then of 2 p + 1), read as a whole. The slot is
// tc_basis_column_slot(c) + tc_basis_rank_slot(k), and the column part is a sum over the bits of c (the inverse
// of the column permutation above: c = 32 (j / 4) + 8 (n / 2) + 2 (j % 4) + n % 2), so columns with disjoint
// bits add.
// The fp16 product's slots, in halves: per k step of 16 and n-tile pair p, lane (g, t)'s B fragments are one uint4
// (k 2 t, 2 t + 1, 2 t + 8, 2 t + 9 of n-tile 2 p, then of 2 p + 1); additive over the bits of c likewise.
__host__ __device__ constexpr int tc_half_basis_column_slot(int c) {
  return 512 * (c >> 5) + 256 * ((c >> 2) & 1) + 64 * ((c >> 3) & 3) + 32 * (c & 1) + 4 * ((c >> 1) & 1);
}
__device__ __forceinline__ int tc_half_basis_rank_slot(int k) {
  return 1024 * (k >> 4) + 8 * ((k & 7) >> 1) + (k & 1) + 2 * ((k >> 3) & 1);
}
// M[row0 + i, j] in halves: the A fragment of row group i / 16, lane (g, t) for k step j / 16 is one uint4.
template <int RP>
__device__ __forceinline__ int tc_half_factor_slot(int i, int j) {
  const int gi = i & 15;
  return (((i >> 4) * (RP / 16) + (j >> 4)) * 32 + 4 * (gi & 7) + ((j & 7) >> 1)) * 8 + (j & 1) + 2 * (gi >> 3) +
         4 * ((j >> 3) & 1);
}

__host__ __device__ constexpr int tc_basis_column_slot(int c) {
  return 256 * (c >> 5) + 128 * ((c >> 2) & 1) + 32 * ((c >> 3) & 3) + 16 * (c & 1) + 2 * ((c >> 1) & 1);
}
__device__ __forceinline__ int tc_basis_rank_slot(int k) { return 512 * (k >> 3) + 4 * (k & 3) + ((k >> 2) & 1); }

// Where M[row0 + i, j] of a block goes: the A fragment of warp i / 16, lane (g, t) for k step s is one uint4
// (rows g and g + 8, columns 8 s + t and + 4), read as a whole.
template <int RP>
__device__ __forceinline__ int tc_factor_slot(int i, int j) {
  const int gi = i & 15;
  return (((i >> 4) * (RP / 8) + (j >> 3)) * 32 + 4 * (gi & 7) + (j & 3)) * 4 + (gi >> 3) + 2 * ((j >> 2) & 1);
}

// The tiles' B fragments: two buffers of one tile each, in dynamic shared memory, sized for float32 words (the fp16
// product, whose tiles take half that, forms M in float32 there first).
// Two buffers and one barrier per tile (not per stage of several tiles: 2-4 tiles per barrier measured slower on
// the H100, bench/NOTES.md, twelfth session).
// At the prepared rank only M's float32 copy (kRows x RP) lives there.
__host__ __device__ constexpr int tc_basis_bytes(int rp, bool sr) {
  return tc_prepared(rp, sr) ? tc_rows(rp, sr) * rp * 4 : 2 * tc_cols(rp, sr) * rp * 4;
}

// The prepared fragments of V_t: per 64-column piece P (columns 64 P .. + 63 of V_t, zero past d_in and past r),
// its B fragments as the staged fp16 tile of one 64-column half (tc_half_basis_*_slot: kSteps x 4 x 32 uint4, read
// as [(s * 4 + p) * 32 + lane]), of V / s_P; then the pieces' scales s_P (floats), the power of two above the
// piece's max|V| (pow2_scale). In 16-byte units from frag_offset[t].
__host__ __device__ constexpr int64_t tc_piece_units(int rp) { return 64 * rp * 2 / 16; }
__host__ __device__ constexpr int64_t tc_fragment_units(int rp, int64_t d_in) {
  return (d_in + 63) / 64 * tc_piece_units(rp) + ((d_in + 63) / 64 + 3) / 4;
}

// Writes the prepared fragments (tc_fragment_units) of every weight's pieces: the table's row blocks of one column
// chunk (launch.lowrank_blocks: each chunk's tiles have one program per row block, and the chunks cover every tile
// once) share that chunk's pieces, each piece written by one warp of one of them. A warp per piece: lane
// (g, t) reads V[c, 16 s + 2 t + {0, 1, 8, 9}] of the piece's columns c of n-tiles 2 p and 2 p + 1 (column g), for
// every k step s and pair p, keeps them in registers for the piece's max, then writes its uint4 per (s, p).
template <int RP, bool STOCHASTIC>
__global__ void __launch_bounds__(kThreads) lowrank_basis_fragments_kernel(const __grid_constant__ LowrankPtrs ptrs,
                                                                           const LowrankRow* __restrict__ table) {
  constexpr int kSteps = RP / 16, kPieceCols = 64, kPiecesPerTile = tc_cols(RP, STOCHASTIC) / kPieceCols;
  const LowrankRow row = table[blockIdx.x];
  const float* v = ptrs.v[row.tensor];
  uint4* frag = ptrs.frags + ptrs.frag_offset[row.tensor];
  const int64_t d_in = row.d_in, pieces = (d_in + kPieceCols - 1) / kPieceCols;
  float* piece_scale = reinterpret_cast<float*>(frag + pieces * tc_piece_units(RP));
  const int r = static_cast<int>(row.rank), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  // the row blocks of one column chunk (same tile range) share its pieces: block b's warps take pieces
  // b * warps + warp + j * (row blocks * warps), so that a piece's latency, not a weight's, bounds the kernel
  constexpr int kRowsPerBlock = tc_rows(RP, STOCHASTIC), kWarps = kThreads / 32;
  const int64_t row_blocks = (row.d_out + kRowsPerBlock - 1) / kRowsPerBlock, b = row.row0 / kRowsPerBlock;
  const int64_t end = min(row.tile_end * kPiecesPerTile, pieces);
  for (int64_t piece = row.tile_begin * kPiecesPerTile + b * kWarps + warp; piece < end;
       piece += row_blocks * kWarps) {
    float x[kSteps][4][8];
    uint32_t amax = 0u;
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
#pragma unroll
      for (int p = 0; p < 4; ++p)
#pragma unroll
        for (int h = 0; h < 8; ++h) {  // n-tile 2 p + h / 4, k 16 s + 2 t + (h & 1) + 8 ((h >> 1) & 1)
          const int j = 2 * p + (h >> 2), k = 16 * s + 2 * t + (h & 1) + 8 * ((h >> 1) & 1);
          const int64_t c = piece * kPieceCols + 32 * (j >> 2) + 8 * (g >> 1) + 2 * (j & 3) + (g & 1);
          x[s][p][h] = c < d_in && k < r ? v[c * r + k] : 0.0f;
          amax = max(amax, __float_as_uint(fabsf(x[s][p][h])));
        }
    const float2 scale = pow2_scale(__reduce_max_sync(0xffffffffu, amax));
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        uint32_t words[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const __half2 h2 = __floats2half2_rn(x[s][p][2 * q] * scale.y, x[s][p][2 * q + 1] * scale.y);
          words[q] = *reinterpret_cast<const uint32_t*>(&h2);
        }
        frag[piece * tc_piece_units(RP) + (s * 4 + p) * 32 + lane] = make_uint4(words[0], words[1], words[2], words[3]);
      }
    if (lane == 0) piece_scale[piece] = scale.x;
  }
}

template <typename WT, int RP, bool REGEN, bool STOCHASTIC>
__global__ void __launch_bounds__(kThreads, 2)
    lowrank_tc_kernel(const __grid_constant__ LowrankPtrs ptrs, const LowrankRow* __restrict__ table, Directions d,
                      uint2 key, uint2 rounding_key) {
  static_assert(!std::is_same<WT, float>::value && RP % 8 == 0 && RP <= kTcMaxRank, "16-bit weights, r <= 64");
  constexpr int kRows = tc_rows(RP, STOCHASTIC), kCols = tc_cols(RP, STOCHASTIC), kRowGroups = kRows / 16;
  static_assert(kRows <= 2 * kCols, "the fp16 path forms M in float32 in the basis buffers first");
  // fp16 product (kHalf: k steps of 16, fragments in halves) or TF32 (k steps of 8, fragments as float bits)
  constexpr bool kPrepared = tc_prepared(RP, STOCHASTIC);  // B fragments prepared in global memory (tc_fragment_units)
  constexpr bool kHalf = RP >= kTcHalfMinRank || kPrepared;
  static_assert(!kHalf || RP % 16 == 0, "fp16 k steps of 16");
  constexpr int kSteps = RP / (kHalf ? 16 : 8), kBasisPerThread = kCols * RP / kThreads;
  // M's A fragments for the block's rows (static shared memory) and the tiles' B fragments (two buffers,
  // tc_basis_bytes): tile u + 1's are written while tile u's are read, one barrier per tile orders both
  constexpr int kTileFloats = kHalf ? kCols * RP / 2 : kCols * RP;
  // Weights are loaded with L2's 256-byte hint (load_16_bytes_l2_256). H100: 1-2% faster at r <= 32 (nearest r = 8
  // 1.837 -> 1.795 ms), r = 64 nearest 2.005 -> 1.940 device ms (thirteenth session); stochastic r = 64, once the
  // first tile's loads were issued before M is formed, 2.098 -> 2.067 (fourteenth; bench/NOTES.md).
  __shared__ __align__(16) float m_frag[kHalf ? kRows * RP / 2 : kRows * RP];
  __shared__ uint32_t m_amax_bits;  // fp16 path: bits of max|M| over the block's rows
  // fp16 path: s_M s_c per tile column c, where V's row c is staged as V[c, :] / s_c (three buffers: tile u + 2's are
  // written while slow threads may still read tile u's in the rounding, which follows the barrier)
  __shared__ __align__(16) float col_scale[kHalf ? 3 : 1][kHalf ? kCols : 4];
  extern __shared__ __align__(16) float v_frag[];  // [2][kTileFloats]
  const LowrankRow row = table[blockIdx.x];
  if (!d.all_finite()) return;  // a coefficient that is not finite vetoes every write (no host sync to raise)
  WT* w = reinterpret_cast<WT*>(ptrs.w[row.tensor]);
  const float* v = ptrs.v[row.tensor];
  const int r = static_cast<int>(row.rank);
  const int64_t d_in = row.d_in, d_out = row.d_out, row0 = row.row0;
  const uint32_t tensor_id = static_cast<uint32_t>(row.tensor_id);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int warp_rows = warp % kRowGroups, warp_cols = warp / kRowGroups;  // 16-row group, 64-column half

  // this thread's share of a tile's basis entries, loaded from global memory a tile ahead, entry q kPerPass + i.
  // fp16: ranks lane + 32 i of column warp + 8 q, so that a column's max over its ranks is one warp reduction.
  // TF32: lane (lane / 8, lane % 8) takes column 4 (warp + 8 q) + lane / 8, rank 8 i + lane % 8: a warp's staging
  // store writes 4 columns of one k step, 32 distinct banks (a column's k step spans 8 banks of the fragment
  // layout, so a warp on one column's ranks, as before, met 4-way conflicts at r = 32). H100, K = 4 stochastic
  // r = 32: 1.930 -> 1.900 device ms; at r = 64 (fp16 pairs) that mapping was slower (bench/NOTES.md, fifteenth
  // session).
  constexpr int kPerPass = kHalf ? (RP + 31) / 32 : RP / 8, kPasses = kBasisPerThread / kPerPass;
  static_assert(kPrepared || (kHalf ? RP % 32 == 0 : kCols % 32 == 0), "staging passes");
  const int c_mine = kHalf ? warp : 4 * warp + (lane >> 3), k_mine = kHalf ? lane : lane & 7;
  constexpr int kPassCols = kHalf ? 8 : 32, kRankStride = kHalf ? 32 : 8;  // column and rank steps between entries
  // a tile column's slot (floats, or halves for kHalf): its 64-column half's fragments, then the half's column
  // slot (additive over the bits of c)
  auto column_slot = [](int c) {
    return (c >> 6) * (64 * RP) + (kHalf ? tc_half_basis_column_slot(c & 63) : tc_basis_column_slot(c & 63));
  };
  auto rank_slot = [](int k) { return kHalf ? tc_half_basis_rank_slot(k) : tc_basis_rank_slot(k); };
  const int basis_slot = rank_slot(k_mine);
  auto load_basis = [&](int64_t col0, float (&basis)[kBasisPerThread]) {
    const float* p = v + (col0 + c_mine) * r + k_mine;
    const int64_t cols_left = d_in - col0 - c_mine;
#pragma unroll
    for (int q = 0; q < kPasses; ++q)
#pragma unroll
      for (int i = 0; i < kPerPass; ++i)
        basis[q * kPerPass + i] = k_mine + kRankStride * i < r && kPassCols * q < cols_left
                                      ? p[static_cast<int64_t>(kPassCols * q) * r + kRankStride * i] : 0.0f;
  };
  const int64_t rows[2] = {row0 + 16 * warp_rows + (lane >> 2), row0 + 16 * warp_rows + (lane >> 2) + 8};
  const int64_t col_offset = 64 * warp_cols + 8 * (lane & 3);
  WT raw[2][2][8];  // rows g, g + 8; columns col_lane .. + 7 and + 32 .. + 39 of a tile
  // interior: the program's rows and tiles lie inside the weight, rows 16-byte aligned (no per-chunk checks)
  auto load_weights = [&](auto interior, int64_t tile) {
    constexpr bool kInterior = decltype(interior)::value;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int p = 0; p < 2; ++p)
        if (kInterior || rows[h] < d_out) {
          const int64_t col = tile * kCols + col_offset + 32 * p;
          if (kInterior || (col + 8 <= d_in && vec_aligned<WT, 8>(w + rows[h] * d_in + col)))
            load_16_bytes_l2_256(w + rows[h] * d_in + col, raw[h][p]);
          else
            load_raw<WT, 8>(w + rows[h] * d_in, col, d_in, raw[h][p]);
        }
  };
  // the first tile's weights and basis are loaded before M is formed, so that their latency overlaps M's Philox
  // and Box-Muller work (H100: 0.3-1% faster at every rank and K, bench/NOTES.md, fourteenth session)
  const int64_t tiles = row.tile_end - row.tile_begin;
  float basis[kBasisPerThread];  // tile u + 1's entries, loaded during tile u - 1
  if (tiles > 0) {
    load_weights(std::false_type{}, row.tile_begin);
    if constexpr (!kPrepared) load_basis(row.tile_begin * kCols, basis);
  }
  // M[row0 + i, j], zero for rows >= d_out and for j in [r, RP) (disjoint writes). The fp16 path scales M by
  // 1 / s_M and each row c of V by 1 / s_c (pow2_scale of max|M| over the block's rows and of max_k |V[c, k]|) and
  // the product's column c back by s_M s_c: within triton_backend's bound for its per-basis s_V
  // (cuda_backend.lowrank_product_error), as s_c <= s_V.
  float m_scale_up = 1.0f;
  auto form_m = [&](auto put) {
    form_factor_rows<kRows, REGEN>(row, ptrs.f[row.tensor], d, key, put);
    for (int e = threadIdx.x; e < kRows * (RP - r); e += kThreads) {
      const int i = e / (RP - r);
      put(i, r + e - i * (RP - r), 0.0f);
    }
  };
  if constexpr (kHalf) {
    float* m32 = v_frag;  // M [kRows, RP] in float32 until the basis is staged
    if (threadIdx.x == 0) m_amax_bits = 0u;
    uint32_t amax = 0u;  // bits of |x|: non-negative floats order as their bits (NaN above infinity)
    form_m([&](int i, int j, float x) {
      m32[i * RP + j] = x;
      amax = max(amax, __float_as_uint(fabsf(x)));
    });
    amax = __reduce_max_sync(0xffffffffu, amax);
    __syncthreads();  // m_amax_bits initialised
    if (lane == 0) atomicMax(&m_amax_bits, amax);
    __syncthreads();  // M and its max complete
    const float2 m_scale = pow2_scale(m_amax_bits);
    m_scale_up = m_scale.x;
    __half* m_half = reinterpret_cast<__half*>(m_frag);
    for (int e = threadIdx.x; e < kRows * RP; e += kThreads)
      m_half[tc_half_factor_slot<RP>(e / RP, e % RP)] = __float2half_rn(m32[e] * m_scale.y);
    __syncthreads();  // M's float32 copy read before the basis overwrites it
  } else {
    form_m([&](int i, int j, float x) { m_frag[tc_factor_slot<RP>(i, j)] = __uint_as_float(to_tf32(x)); });
  }

  // the program's tile u (counted from tile_begin) has buffer u % 2 (its column scales u % 3)
  auto stage_basis = [&](int64_t u, const float (&basis)[kBasisPerThread]) {
    float* frag = v_frag + (u & 1) * kTileFloats;
#pragma unroll
    for (int q = 0; q < kPasses; ++q) {  // the column bits of c_mine and kPassCols q are disjoint
      const int slot = column_slot(c_mine) + column_slot(kPassCols * q) + basis_slot;
      if constexpr (kHalf) {
        uint32_t amax = 0u;  // max_k |V[c, k]| of this column (bits)
#pragma unroll
        for (int i = 0; i < kPerPass; ++i) amax = max(amax, __float_as_uint(fabsf(basis[q * kPerPass + i])));
        const float2 s = pow2_scale(__reduce_max_sync(0xffffffffu, amax));
#pragma unroll
        for (int i = 0; i < kPerPass; ++i)
          reinterpret_cast<__half*>(frag)[slot + rank_slot(kRankStride * i)] =
              __float2half_rn(basis[q * kPerPass + i] * s.y);
        if (lane == 0) col_scale[u % 3][c_mine + kPassCols * q] = m_scale_up * s.x;
      } else {
#pragma unroll
        for (int i = 0; i < kPerPass; ++i)
          frag[slot + rank_slot(kRankStride * i)] = __uint_as_float(to_tf32(basis[q * kPerPass + i]));
      }
    }
  };
  if (!kPrepared && tiles > 0) {
    stage_basis(0, basis);
    if (tiles > 1) load_basis((row.tile_begin + 1) * kCols, basis);
  }
  __syncthreads();  // M's fragments and the first tile's basis are written
  // prepared fragments: V_t's pieces, then their scales (tc_fragment_units)
  const uint4* v_pieces = kPrepared ? ptrs.frags + ptrs.frag_offset[row.tensor] : nullptr;
  const float* piece_scales =
      kPrepared ? reinterpret_cast<const float*>(v_pieces + (d_in + 63) / 64 * tc_piece_units(RP)) : nullptr;
  // the tile loop; kInterior: every row and tile of the program inside the weight, rows 16-byte aligned, so the
  // loop has no per-chunk checks (H200, K = 1, device ms: prepared r = 32 nearest 1.586 -> 1.393; staged r = 64
  // nearest 1.680 -> 1.538, stochastic r = 8 1.449 -> 1.347, r = 64 2.080 -> 1.886; bench/NOTES.md)
  auto walk = [&](auto interior) {
    constexpr bool kInterior = decltype(interior)::value;
    uint4 a_held[kPrepared ? kSteps : 1];  // prepared: the warp's A fragments in registers for the whole walk
    if constexpr (kPrepared)
#pragma unroll
      for (int s = 0; s < kSteps; ++s)
        a_held[s] = reinterpret_cast<const uint4*>(m_frag)[(warp_rows * kSteps + s) * 32 + lane];
    for (int64_t u = 0; u < tiles; ++u) {
      const int64_t tile = row.tile_begin + u;
      const int64_t col_lane = tile * kCols + col_offset;
      const int64_t piece = tile * (kCols / 64) + warp_cols;  // the warp's 64-column piece of V
      const uint4* b_frag = kPrepared ? v_pieces + piece * tc_piece_units(RP)
                                      : reinterpret_cast<const uint4*>(v_frag + (u & 1) * kTileFloats +
                                                                       warp_cols * (kTileFloats * 64 / kCols));
      // prepared: no fragments past the last piece
      const bool piece_in = !kPrepared || kInterior || piece * 64 < d_in;
      float acc[8][4];
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;
      if (piece_in) {
#pragma unroll
        for (int s = 0; s < kSteps; ++s) {  // a lane's fragments of a k step: one uint4 of M, one per n-tile pair
          const uint4 a4 =
              kPrepared ? a_held[s] : reinterpret_cast<const uint4*>(m_frag)[(warp_rows * kSteps + s) * 32 + lane];
          const uint32_t a[4] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
          for (int p = 0; p < 4; ++p) {
            uint4 b;
            if constexpr (kPrepared) {  // a plain global load (as the probe's), not the non-coherent path
              uint32_t bw[4];
              load_16_bytes_l2_256(reinterpret_cast<const uint32_t*>(b_frag + (s * 4 + p) * 32 + lane), bw);
              b = make_uint4(bw[0], bw[1], bw[2], bw[3]);
            } else {
              b = b_frag[(s * 4 + p) * 32 + lane];
            }
            if constexpr (kHalf) {
              mma_f16(acc[2 * p], a, b.x, b.y);
              mma_f16(acc[2 * p + 1], a, b.z, b.w);
            } else {
              mma_tf32(acc[2 * p], a, __uint_as_float(b.x), __uint_as_float(b.y));
              mma_tf32(acc[2 * p + 1], a, __uint_as_float(b.z), __uint_as_float(b.w));
            }
          }
        }
      }
      WT cur[2][2][8];  // this tile's weights, while the next tile's are loaded (H100: 1.2-1.3x faster, bench/NOTES.md)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int p = 0; p < 2; ++p)
#pragma unroll
          for (int i = 0; i < 8; ++i) cur[h][p][i] = raw[h][p][i];
      if (u + 1 < tiles) load_weights(interior, tile + 1);
      // the next tile's basis, into the other buffer (whose readers passed the last barrier)
      if constexpr (!kPrepared) {
        if (u + 1 < tiles) {
          stage_basis(u + 1, basis);
          if (u + 2 < tiles) load_basis((tile + 2) * kCols, basis);
        }
        __syncthreads();  // this tile's reads of its buffer done, the next tile's writes seen
      }
      const float tile_scale = kPrepared && piece_in ? m_scale_up * __ldg(piece_scales + piece) : 1.0f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          const int64_t col = col_lane + 32 * p;
          if (!kInterior && (rows[h] >= d_out || col >= d_in)) continue;
          float out[8];
          to_f32<WT, 8>(cur[h][p], out);
          float scale[8] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};  // s_M s_c of the fp16 product
          if constexpr (kPrepared) {
#pragma unroll
            for (int i = 0; i < 8; ++i) scale[i] = tile_scale;
          } else if constexpr (kHalf) {
            const float4* cs = reinterpret_cast<const float4*>(&col_scale[u % 3][col_offset + 32 * p]);
            const float4 s0 = cs[0], s1 = cs[1];
            const float sv[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i) scale[i] = sv[i];
          }
#pragma unroll
          for (int i = 0; i < 8; ++i)  // column col + i
            out[i] += kHalf ? acc[4 * p + (i >> 1)][2 * h + (i & 1)] * scale[i]
                            : acc[4 * p + (i >> 1)][2 * h + (i & 1)];
          uint32_t words[8];
          rounding_words<8, STOCHASTIC>(rows[h] * d_in + col, tensor_id, rounding_key, words);
          alignas(16) WT rounded[8];
          round_group<WT, 8>(out, words, STOCHASTIC, rounded);
          WT* dst = w + rows[h] * d_in + col;  // one vector store where the chunk is inside the row and aligned
          if (kInterior || (col + 8 <= d_in && vec_aligned<WT, 8>(dst))) store_16_bytes(dst, rounded);
          else store_elems<WT, 8>(dst, int64_t{0}, d_in - col, rounded);
        }
      }
    }
  };
  const bool interior = row0 + kRows <= d_out && row.tile_end * kCols <= d_in && d_in % 8 == 0 &&
                        (reinterpret_cast<uintptr_t>(w) & 15) == 0;
  if (interior) walk(std::true_type{});
  else walk(std::false_type{});
}

// the rank the tensor-core kernel is compiled for: 8, 16, 32 or 64 (cuda_backend groups weights by it too)
static int lowrank_tc_padded_rank(int max_rank) {
  int rp = 8;
  while (rp < max_rank) rp *= 2;
  return rp;
}

template <typename WT>
static cudaError_t launch_lowrank_typed(const LowrankArgs& a, cudaStream_t stream) {
  const LowrankRow* table = reinterpret_cast<const LowrankRow*>(a.table);
  const dim3 grid(static_cast<unsigned>(a.rows)), block(kThreads);
  const uint2 key = make_uint2(a.k0, a.k1), rkey = make_uint2(a.rk0, a.rk1);
  const Directions d{a.coeffs, a.scale, a.streams, a.stream0, a.K};
  auto launch = [&](auto kernel, int shared_bytes = 0) {
    kernel<<<grid, block, shared_bytes, stream>>>(a.ptrs, table, d, key, rkey);
    return cudaGetLastError();
  };
  // pick(REGEN, STOCHASTIC) as std::true_type / std::false_type values for the launch's flags
  auto by_flags = [&](auto pick) {
    using T = std::true_type;
    using F = std::false_type;
    if (a.regenerate) return a.stochastic ? pick(T{}, T{}) : pick(T{}, F{});
    return a.stochastic ? pick(F{}, T{}) : pick(F{}, F{});
  };
  if constexpr (!std::is_same<WT, float>::value) {
    if (a.tensor_core) {
      auto tc = [&](auto rp) {
        constexpr int kRp = decltype(rp)::value;
        return by_flags([&](auto regen, auto stochastic) {
          constexpr bool kSr = decltype(stochastic)::value;
          if constexpr (tc_prepared(kRp, kSr)) {
            if (a.ptrs.frags == nullptr) return cudaErrorInvalidValue;  // lowrank_fragment_layout's scratch
            lowrank_basis_fragments_kernel<kRp, kSr><<<grid, dim3(kThreads), 0, stream>>>(a.ptrs, table);
          }
          auto kernel = lowrank_tc_kernel<WT, kRp, decltype(regen)::value, kSr>;
          constexpr int kBytes = tc_basis_bytes(kRp, kSr);
          const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
          if (e != cudaSuccess) return e;
          return launch(kernel, kBytes);
        });
      };
      switch (lowrank_tc_padded_rank(a.max_rank)) {
        case 8: return tc(std::integral_constant<int, 8>{});
        case 16: return tc(std::integral_constant<int, 16>{});
        case 32: return tc(std::integral_constant<int, 32>{});
        default: return tc(std::integral_constant<int, 64>{});
      }
    }
  }
  return by_flags([&](auto regen, auto stochastic) {
    return launch(lowrank_kernel<WT, decltype(regen)::value, decltype(stochastic)::value>);
  });
}

std::pair<int, int> lowrank_tc_geometry(int rp, bool stochastic) {
  return {tc_rows(rp, stochastic), tc_cols(rp, stochastic)};
}
int lowrank_tc_half_min_rank() {  // a prepared rank's product is fp16 too (with either rounding)
  for (int rp = 8; rp < kTcHalfMinRank; rp *= 2)
    if (tc_prepared(rp, false) || tc_prepared(rp, true)) return rp;
  return kTcHalfMinRank;
}

int64_t lowrank_fragment_layout(LowrankArgs& a, const int64_t* d_in, int n_tensors) {
  if (!a.tensor_core || a.w_dtype == DType::kFloat32 || a.max_rank > kTcMaxRank) return 0;
  const int rp = lowrank_tc_padded_rank(a.max_rank);
  if (!tc_prepared(rp, a.stochastic)) return 0;
  int64_t units = 0;
  for (int t = 0; t < n_tensors; ++t) {
    if (units > INT32_MAX) return -1;
    a.ptrs.frag_offset[t] = static_cast<int32_t>(units);
    units += tc_fragment_units(rp, d_in[t]);
  }
  return 16 * units;
}

cudaError_t launch_lowrank(const LowrankArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  if (a.tensor_core && (a.w_dtype == DType::kFloat32 || a.max_rank > kTcMaxRank)) return cudaErrorInvalidValue;
  return with_element_type(a.w_dtype, [&](auto w) { return launch_lowrank_typed<decltype(w)>(a, stream); });
}

}  // namespace zk
