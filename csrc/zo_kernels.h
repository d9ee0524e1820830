// Host interface of the CUDA kernels (no torch headers here: csrc/bindings.cpp adapts tensors to it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

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
// Padded ranks up to this take the staged tensor-core kernel's wide blocks (64 rows x 128-column tiles), larger
// ones its tall blocks (128 x 64). H100, OPT-1.3B's linears, K = 1: wide at r <= 16 nearest 1.795 -> 1.725 ms,
// stochastic r = 8 1.930 -> 1.892, r = 16 1.940 -> 1.923 (a row's segment per tile: 256 bytes instead of 128); at
// r = 32 (thirteenth session, whole-sector columns) nearest 1.831 -> 1.791 device ms but stochastic 1.894 -> 2.327
// (128 registers and a spill), so 16 (since the twenty-sixth session only r = 8 is staged at that size: r = 16
// takes the prepared kernel, below). The geometry per padded rank and rounding is reported by
// lowrank_tc_geometry(), compiled with the kernel (an nvcc-only -D flag reaches it), as the extension's function
// of that name (cuda_backend.lowrank_geometry builds tables to match).
#ifndef ZK_TC_WIDE_MAX_RANK
#define ZK_TC_WIDE_MAX_RANK 16
#endif
constexpr int kTcWideMaxRank = ZK_TC_WIDE_MAX_RANK;
// (rows per block, columns per tile) at padded rank rp with stochastic or nearest rounding
std::pair<int, int> lowrank_tc_geometry(int rp, bool stochastic);
// Padded ranks from this up take the tensor-core kernel's fp16 product (M and each row of V scaled by powers of two,
// rounded to fp16, mma m16n8k16: half the tensor instructions of TF32 at the same 11 significant bits), smaller ones
// TF32; above kTcMaxRank: TF32 at every rank. Reported by
// lowrank_tc_half_min_rank() (cuda_backend.lowrank_product_error's underflow term). H100, OPT-1.3B's linears,
// K = 1: fp16 at r = 64 stochastic 2.641 -> 2.215 device ms, nearest 2.137 -> 2.113; at r = 32 slower (nearest
// 1.833 -> 1.887), so 64 (twelfth session; in the thirteenth TF32 at r = 64 was still slower: 1.938 -> 2.019).
#ifndef ZK_TC_HALF_MIN_RANK
#define ZK_TC_HALF_MIN_RANK 64
#endif
constexpr int kTcHalfMinRank = ZK_TC_HALF_MIN_RANK;
int lowrank_tc_half_min_rank();
// Rows per block (0: none) with which the tensor-core kernel reads the basis at padded rank 16 / 32 / 64 as
// prepared fp16 fragments in global memory (a small kernel writes them per launch, each 64-column piece of V scaled
// by its own power of two) instead of staging it in shared memory per tile; its tiles are then 8192 / rows columns
// (8 warps of 16 x 64; csrc/zo_lowrank.cu). Per rounding (_SR: stochastic), as the two differ in what limits
// them. H200, OPT-1.3B's linears, K = 1, device ms nearest / stochastic (bench/NOTES.md, twenty-fifth and
// twenty-sixth sessions):
// - r = 16: 64 rows (1.287 / 1.355) against the staged 64 x 128 TF32 kernel's 1.295 / 1.407; 32 rows 1.294 / 1.396.
// - r = 32: 64 rows (1.345 / 1.489; call 1 alike) against 32 rows' 1.359 / 1.507 and the staged 128 x 64 kernel's
//   1.380 / 1.569; 128 rows 1.396 / 1.570.
// - r = 64 nearest: staged 128 x 64 (1.537); prepared 32, 64, 128 rows 1.703, 1.718, 1.785.
// - r = 64 stochastic: 64 rows (1.760) against staged 1.897; 32 rows 1.811, 128 rows 1.895.
#ifndef ZK_TC_PREPARED_ROWS_R16
#define ZK_TC_PREPARED_ROWS_R16 64
#endif
#ifndef ZK_TC_PREPARED_ROWS_R16_SR
#define ZK_TC_PREPARED_ROWS_R16_SR ZK_TC_PREPARED_ROWS_R16
#endif
#ifndef ZK_TC_PREPARED_ROWS_R32
#define ZK_TC_PREPARED_ROWS_R32 64
#endif
#ifndef ZK_TC_PREPARED_ROWS_R32_SR
#define ZK_TC_PREPARED_ROWS_R32_SR ZK_TC_PREPARED_ROWS_R32
#endif
#ifndef ZK_TC_PREPARED_ROWS_R64
#define ZK_TC_PREPARED_ROWS_R64 0
#endif
#ifndef ZK_TC_PREPARED_ROWS_R64_SR
#define ZK_TC_PREPARED_ROWS_R64_SR 64
#endif
constexpr int kTcPreparedRowsR16 = ZK_TC_PREPARED_ROWS_R16, kTcPreparedRowsR16Sr = ZK_TC_PREPARED_ROWS_R16_SR;
constexpr int kTcPreparedRowsR32 = ZK_TC_PREPARED_ROWS_R32, kTcPreparedRowsR32Sr = ZK_TC_PREPARED_ROWS_R32_SR;
constexpr int kTcPreparedRowsR64 = ZK_TC_PREPARED_ROWS_R64, kTcPreparedRowsR64Sr = ZK_TC_PREPARED_ROWS_R64_SR;
struct LowrankPtrs {
  void* w[kMaxTensorsPerLaunch];
  const float* v[kMaxTensorsPerLaunch];  // V_t [d_in, r] row-major
  const float* f[kMaxTensorsPerLaunch];  // M_t [d_out, r] row-major when not regenerated, else unused
  // prepared basis fragments (lowrank_fragment_layout): V_t's at frags + frag_offset[t] (16-byte units), else unused
  uint4* frags;
  int32_t frag_offset[kMaxTensorsPerLaunch];
};

struct LowrankArgs {
  DType w_dtype;
  bool regenerate, stochastic;  // regenerate: M_t = sum_k c_k N_{t,k} from the streams; else M_t = f[t]
  bool tensor_core;  // the tensor-core kernel (16-bit weights, max_rank <= 64; its table geometry), else FMA
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
// Where a launch of the tensor-core kernel at a prepared rank and rounding (kTcPreparedRows*) keeps its basis
// fragments: fills args.ptrs.frag_offset from the weights' d_in and returns the device scratch bytes it needs
// (args.ptrs.frags), or 0 where the launch prepares none.
int64_t lowrank_fragment_layout(LowrankArgs& args, const int64_t* d_in, int n_tensors);

// Output update of a low-rank perturbation (csrc/zo_delta_add.cu): out += scale * xv f^T, float32 sums rounded
// once to nearest into out's dtype. out [n_rows, d_out], xv [n_rows, rank] and f [d_out, rank] float32, contiguous.
struct DeltaAddArgs {
  DType out_dtype;
  void* out;
  const float* xv;
  const float* f;
  float scale;
  int64_t n_rows, d_out;
  int rank;
};

cudaError_t launch_delta_add(const DeltaAddArgs& args, cudaStream_t stream);
cudaError_t launch_philox(const int64_t* counters, int64_t* out, int64_t n, uint32_t k0, uint32_t k1,
                          cudaStream_t stream);

}  // namespace zk
