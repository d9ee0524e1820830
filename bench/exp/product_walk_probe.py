"""The tensor-core low-rank update's lower bound per block geometry: W += M V^T on 16-bit weights with M and V
already in mma fragment order in global memory (fp16, no scales, no Philox, no basis staging, rounding to
nearest), so that only the walk, the fragment loads and the product remain. Each block of 8 warps owns BM rows
and walks column tiles of BN (warp w: rows 16 (w % (BM / 16)) .. + 15 of the block, columns 64 (w / (BM / 16)) ..
+ 63 of a tile, the production kernel's column permutation and 16-byte vectors; the next tile's weights loaded
during this tile's product). Whether 32 x 256 tiles (512-byte row segments, 1.09x the copy roofline walked
alone) keep their walk's advantage once a product rides on them, against 128 x 64 (the production kernel's tall
geometry, 1.26-1.28x walked alone). Weights as traversal_probe.py (OPT-1.3B's linears stacked by shape; one M and
one basis per stack, so the fragments stay in L2 better than per-layer bases would).

python bench/exp/product_walk_probe.py [OUT.json]   (a CUDA GPU with nvcc; builds an inline extension)
"""
import os
import sys

import torch
from torch.utils.cpp_extension import load_inline

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_perturb import copy_roofline, timer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from traversal_probe_cuda import save_rows  # noqa: E402

CUDA = r"""
#include <cstdint>
#include <cuda_bf16.h>
#include <torch/extension.h>

#include "zo_elements.cuh"
#include "zo_random.cuh"

__device__ __forceinline__ void mma_f16(float (&c)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 load_16(const void* p) {
  uint4 x;
  asm volatile("ld.global.L2::256B.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(x.x), "=r"(x.y), "=r"(x.z), "=r"(x.w)
               : "l"(p));
  return x;
}

__device__ __forceinline__ void store_16(void* p, const uint4& x) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(x.x), "r"(x.y), "r"(x.z), "r"(x.w)
               : "memory");
}

// w [d_out, d_in] bf16 (whole tiles); b_frag [d_out / rows_per_basis][d_in / 64][RP / 16][4][32] uint4 fragments of
// one V per rows_per_basis rows (a stack of weights, each with its own basis; fragments()).
// MODE 0: a_frag [d_out / 16][RP / 16][32] uint4 fragments of M, prepared; the product added as is, rounded to
// nearest. MODE >= 1, the production kernel's remaining costs: M [BM, RP] of the block regenerated (1e-3 times the
// normals of Philox units (row0 RP / 4 + u) of stream 0, the contract's indices), scaled into fp16 by the power of
// two above the block's max|M| (a block reduction), the product scaled back per element; with m_out, M is written
// there (for the check). MODE 2 adds stochastic rounding (one Philox call per 8 elements, the rounding stream).
template <int BM, int BN, int RP, int MODE>
__global__ void __launch_bounds__(256, 2) product_walk(__nv_bfloat16* w, const uint4* __restrict__ a_frag,
                                                       const uint4* __restrict__ b_frag, long d_in, float* m_out,
                                                       long rows_per_basis) {
  constexpr int kRowGroups = BM / 16, kSteps = RP / 16;
  static_assert(kRowGroups * (BN / 64) == 8, "8 warps of 16 x 64");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long group = static_cast<long>(blockIdx.x) * kRowGroups + warp % kRowGroups;
  const int piece_in_tile = warp / kRowGroups;
  const long rows[2] = {group * 16 + (lane >> 2), group * 16 + (lane >> 2) + 8};
  const uint2 key = make_uint2(1234u, 5678u), rounding_key = make_uint2(8765u, 4321u);
  uint4 a[kSteps];
  float scale = 1.0f;
  if constexpr (MODE == 0) {
#pragma unroll
    for (int s = 0; s < kSteps; ++s) a[s] = a_frag[(group * kSteps + s) * 32 + lane];
  } else {
    __shared__ float m[BM][RP];
    __shared__ uint32_t amax_bits;
    const long row0 = static_cast<long>(blockIdx.x) * BM;
    if (threadIdx.x == 0) amax_bits = 0u;
    uint32_t amax = 0u;
    for (int u = threadIdx.x; u < BM * RP / 4; u += 256) {
      float n[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      zk::add_scaled_normals(zk::unit_words((row0 * RP >> 2) + u, 0u, 0u, key), 1e-3f, n);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        m[(4 * u + q) / RP][(4 * u + q) % RP] = n[q];
        amax = max(amax, __float_as_uint(fabsf(n[q])));
        if (m_out != nullptr) m_out[row0 * RP + 4 * u + q] = n[q];
      }
    }
    amax = __reduce_max_sync(0xffffffffu, amax);
    __syncthreads();
    if (lane == 0) atomicMax(&amax_bits, amax);
    __syncthreads();
    const uint32_t e = min((amax_bits >> 23) & 0xFFu, 253u);  // s = 2^(e - 126) > max|M|, then M / s in fp16
    scale = __uint_as_float((e + 1) << 23);
    const float inv = __uint_as_float((253 - e) << 23);
    const int g = lane >> 2, t = lane & 3, r0 = 16 * (warp % kRowGroups);
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      auto pair = [&](int i, int k) {
        const __half2 h = __floats2half2_rn(m[r0 + i][16 * s + k] * inv, m[r0 + i][16 * s + k + 1] * inv);
        return *reinterpret_cast<const uint32_t*>(&h);
      };
      a[s] = make_uint4(pair(g, 2 * t), pair(g + 8, 2 * t), pair(g, 2 * t + 8), pair(g + 8, 2 * t + 8));
    }
  }
  const long tiles = d_in / BN;
  uint4 raw[2][2];
  auto load = [&](long tile) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int p = 0; p < 2; ++p)
        raw[h][p] = load_16(w + rows[h] * d_in + tile * BN + 64 * piece_in_tile + 8 * (lane & 3) + 32 * p);
  };
  load(0);
  for (long tile = 0; tile < tiles; ++tile) {
    const uint4* b = b_frag + ((group * 16 / rows_per_basis) * (d_in / 64) + tile * (BN / 64) + piece_in_tile) *
                                  kSteps * 4 * 32 + lane;
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        const uint4 bp = b[(s * 4 + p) * 32];
        mma_f16(acc[2 * p], a[s], bp.x, bp.y);
        mma_f16(acc[2 * p + 1], a[s], bp.z, bp.w);
      }
    uint4 cur[2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int p = 0; p < 2; ++p) cur[h][p] = raw[h][p];
    if (tile + 1 < tiles) load(tile + 1);
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const long col = tile * BN + 64 * piece_in_tile + 8 * (lane & 3) + 32 * p;
        __nv_bfloat162* v = reinterpret_cast<__nv_bfloat162*>(&cur[h][p]);
        if constexpr (MODE < 2) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {  // columns 2 i, 2 i + 1 of the lane's 8: n-tile 4 p + i, entries 2 h, + 1
            const float2 f = __bfloat1622float2(v[i]);
            v[i] = __floats2bfloat162_rn(f.x + acc[4 * p + i][2 * h] * scale, f.y + acc[4 * p + i][2 * h + 1] * scale);
          }
        } else {
          float out[8];
          uint32_t words[8];
          const uint4 x = zk::unit_words((rows[h] * d_in + col) >> 3, zk::kRoundingStream, 0u, rounding_key);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float2 f = __bfloat1622float2(v[i]);
            out[2 * i] = f.x + acc[4 * p + i][2 * h] * scale;
            out[2 * i + 1] = f.y + acc[4 * p + i][2 * h + 1] * scale;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j) words[j] = zk::rounding_half(x, j);
          zk::round_group<__nv_bfloat16, 8>(out, words, true, *reinterpret_cast<__nv_bfloat16(*)[8]>(&cur[h][p]));
        }
        store_16(w + rows[h] * d_in + col, cur[h][p]);
      }
  }
}

void run(torch::Tensor w, torch::Tensor a_frag, torch::Tensor b_frag, int64_t bm, int64_t bn, int64_t rp,
         int64_t mode, torch::Tensor m_out, int64_t rows_per_basis) {
  auto* p = reinterpret_cast<__nv_bfloat16*>(w.data_ptr<at::BFloat16>());
  const auto* a = reinterpret_cast<const uint4*>(a_frag.data_ptr<int32_t>());
  const auto* b = reinterpret_cast<const uint4*>(b_frag.data_ptr<int32_t>());
  float* mo = m_out.numel() ? m_out.data_ptr<float>() : nullptr;
  const long d_out = w.size(0), d_in = w.size(1);
  TORCH_CHECK(d_in % bn == 0 && d_out % bm == 0 && rows_per_basis % bm == 0, "whole tiles and blocks only");
  const dim3 grid(static_cast<unsigned>(d_out / bm)), block(256);
#define WALK(M, N, R, X) \
  if (bm == M && bn == N && rp == R && mode == X) { product_walk<M, N, R, X><<<grid, block>>>(p, a, b, d_in, mo, rows_per_basis); return; }
  WALK(128, 64, 32, 0) WALK(64, 128, 32, 0) WALK(32, 256, 32, 0) WALK(128, 64, 64, 0) WALK(64, 128, 64, 0)
  WALK(32, 256, 64, 0) WALK(128, 64, 32, 1) WALK(32, 256, 32, 1) WALK(128, 64, 64, 1) WALK(32, 256, 64, 1)
  WALK(128, 64, 32, 2) WALK(32, 256, 32, 2) WALK(128, 64, 64, 2) WALK(32, 256, 64, 2)
  TORCH_CHECK(false, "no such variant");
}
"""

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = ["prepared M, nearest", "regenerated M, scaled, nearest", "regenerated M, scaled, stochastic"]
LANE = torch.arange(32)
# (rows, columns, mode, bases): the twenty-third session's shared-basis figures again, then a basis per weight as
# production has (each weight's fragments read by its own blocks only)
VARIANTS = [(128, 64, 0, "shared"), (32, 256, 0, "shared")] + [
    (bm, bn, mode, "per weight") for bm, bn, mode in
    [(128, 64, 0), (64, 128, 0), (32, 256, 0), (128, 64, 1), (32, 256, 1), (128, 64, 2), (32, 256, 2)]]


def column_of(j, n):
    """The production kernel's column permutation inside 64 columns: n-tile j's column n."""
    return 32 * (j // 4) + 8 * (n // 2) + 2 * (j % 4) + n % 2


def factor_fragments(m):
    """int32 view of M [d_out, r]'s fp16 A fragments [d_out / 16, r / 16, 32, 8 halves] (m16n8k16 A: a0 = (g, 2t..),
    a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..))."""
    d_out, r = m.shape
    g, t = LANE // 4, LANE % 4
    a_rows = torch.stack([g, g, g + 8, g + 8, g, g, g + 8, g + 8], 1)
    a_ks = torch.stack([2 * t, 2 * t + 1, 2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9, 2 * t + 8, 2 * t + 9], 1)
    groups, steps = torch.arange(d_out // 16), torch.arange(r // 16)
    rows = groups[:, None, None, None] * 16 + a_rows[None, None]
    ks = steps[None, :, None, None] * 16 + a_ks[None, None]
    return m.half()[rows, ks].contiguous().view(torch.int32)  # [groups, steps, 32, 8 halves]


def basis_fragments(v):
    """int32 view of V [d_in, r]'s fp16 B fragments [d_in / 64, r / 16, 4, 32, 8 halves] (B = V^T: b0 = (k 2t..,
    column g), b1 = (k 2t + 8.., column g), for n-tiles 2p then 2p + 1, columns permuted by column_of)."""
    d_in, r = v.shape
    g, t = LANE // 4, LANE % 4
    steps = torch.arange(r // 16)
    b_ks = torch.stack([2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9] * 2, 1)  # [32, 8]
    pieces, pairs = torch.arange(d_in // 64), torch.arange(4)
    j = 2 * pairs[:, None, None] + (torch.arange(8) // 4)[None, None, :]  # [4, 1, 8]
    cols = pieces[:, None, None, None, None] * 64 + column_of(j, g[:, None])[None, None]  # [P, 1, 4, 32, 8]
    ks = steps[None, :, None, None, None] * 16 + b_ks[None, None, None]  # [1, S, 1, 32, 8]
    return v.half()[cols, ks].contiguous().view(torch.int32)  # [P, S, 4, 32, 8 halves]


def main():
    ext = load_inline("zk_product_walk_probe", cpp_sources="void run(torch::Tensor w, torch::Tensor a_frag, "
                      "torch::Tensor b_frag, int64_t bm, int64_t bn, int64_t rp, int64_t mode, torch::Tensor m_out, "
                      "int64_t rows_per_basis);",
                      cuda_sources=CUDA, functions=["run"], extra_cuda_cflags=["-O3", "-arch=sm_90"],
                      extra_include_paths=[os.path.join(ROOT, "csrc")], verbose=False)
    device = torch.device("cuda")
    bench = timer(device)
    gen = torch.Generator(device=device).manual_seed(0)
    layers = 24
    shapes = {(2048, 2048): 4 * layers, (8192, 2048): layers, (2048, 8192): layers}
    mats = [(torch.randn(d_out * count, d_in, device=device, generator=gen) * 0.02).to(torch.bfloat16)
            for (d_out, d_in), count in shapes.items()]
    numel = sum(w.numel() for w in mats)
    roofline = copy_roofline(bench, numel, torch.bfloat16, device)
    no_m = torch.empty(0, device=device)
    rows = []
    for rp in (32, 64):
        stacks = {}  # per bases ("shared": one per stack of a shape; "per weight": one per layer): factors
        for bases in ("shared", "per weight"):
            stacks[bases] = []
            for w, ((d_out, d_in), count) in zip(mats, shapes.items()):
                n_bases = count if bases == "per weight" else 1
                m = (torch.randn(w.shape[0], rp, device=device, generator=gen) * 1e-3).half()
                vs = torch.linalg.qr(torch.randn(n_bases, d_in, rp, device=device, generator=gen))[0].half()
                b = torch.cat([basis_fragments(v.cpu()).flatten() for v in vs])
                stacks[bases].append((m, vs, factor_fragments(m.cpu()).to(device), b.to(device), w.shape[0] // n_bases))
        for bm, bn, mode, bases in VARIANTS:
            m, vs, a, b, rows_per_basis = stacks[bases][0]
            part = mats[0][:4096]  # two 2048-row weights of the first stack
            w0 = part.clone()
            m_out = torch.zeros(4096, rp, device=device) if mode else no_m
            ext.run(part, a[:4096 // 16], b, bm, bn, rp, mode, m_out, rows_per_basis)
            m_used = m_out if mode else m[:4096].float()
            expect = torch.cat([w0[i:i + 2048].float() + m_used[i:i + 2048] @ vs[i // rows_per_basis].float().T
                                for i in (0, 2048)]).bfloat16()
            err = ((part.float() - expect.float()).abs() - expect.float().abs() * 2**-7).max().item()
            assert err <= 1e-7, f"{bm} x {bn} r = {rp} mode {mode} {bases}: more than one bf16 ulp off (excess {err})"
            assert not mode or m_out.abs().min() > 0, "M regenerated for every row"
            ms = bench(lambda: [ext.run(w, a, b, bm, bn, rp, mode, no_m, rpb)
                                for w, (_, _, a, b, rpb) in zip(mats, stacks[bases])])
            rows.append(dict(bm=bm, bn=bn, rank=rp, mode=MODES[mode], bases=bases, ms=ms, x_roofline=ms / roofline,
                             excess_over_one_ulp=err))
            print(f"product walk {bm:3d} x {bn:3d} r = {rp} {MODES[mode]:33s} bases {bases:10s} {ms:.3f} ms  "
                  f"{ms / roofline:.2f}x", flush=True)
    save_rows(rows, numel, roofline)


if __name__ == "__main__":
    main()
