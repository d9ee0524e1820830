"""traversal_probe.py's tile walks in CUDA, with and without the L2::256B load hint that the tensor-core low-rank
kernel uses (csrc/zo_lowrank.cu, load_16_bytes_l2_256): whether that hint gives a 128 x 64 walk (128-byte row
segments per tile) what 256-byte segments give. Each block of 256 threads owns BM rows of a weight and walks its
column tiles of BN; a thread moves 16-byte vectors (load, add 1e-3 in float32, round to nearest, store). With
stride S > 1, S blocks (adjacent in launch order) share BM rows and walk their tiles interleaved (block j takes
tiles j, j + S, ...), as the withdrawn ZK_TC_TALL_STRIDE tables did
(results/raw/2026-12-03i_tc_tall_stride_REJECTED.patch). Weights as traversal_probe.py (OPT-1.3B's linears stacked
by shape, three launches per call).

python bench/exp/traversal_probe_cuda.py [OUT.json]   (a CUDA GPU with nvcc; builds an inline extension)
"""
import json
import os
import sys

import torch
from torch.utils.cpp_extension import load_inline

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_perturb import copy_roofline, timer  # noqa: E402

CUDA = r"""
#include <cuda_bf16.h>
#include <torch/extension.h>

template <int BM, int BN, bool HINT>
__global__ void __launch_bounds__(256) walk(__nv_bfloat16* w, long d_out, long d_in, int stride) {
  constexpr int kVecPerRow = BN / 8, kRowsPerPass = 256 / kVecPerRow, kPasses = BM / kRowsPerPass;
  const long row0 = static_cast<long>(blockIdx.x / stride) * BM + threadIdx.x / kVecPerRow;
  const int vec = threadIdx.x % kVecPerRow;
  for (long c0 = static_cast<long>(blockIdx.x % stride) * BN; c0 < d_in; c0 += static_cast<long>(stride) * BN) {
    uint4 x[kPasses];
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const long row = row0 + p * kRowsPerPass;
      const __nv_bfloat16* src = w + row * d_in + c0 + 8 * vec;
      if (row < d_out) {
        if (HINT)
          asm volatile("ld.global.L2::256B.v4.b32 {%0, %1, %2, %3}, [%4];"
                       : "=r"(x[p].x), "=r"(x[p].y), "=r"(x[p].z), "=r"(x[p].w) : "l"(src));
        else
          x[p] = *reinterpret_cast<const uint4*>(src);
      }
    }
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const long row = row0 + p * kRowsPerPass;
      if (row >= d_out) continue;
      __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&x[p]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float2 f = __bfloat1622float2(h[i]);
        h[i] = __floats2bfloat162_rn(f.x + 1e-3f, f.y + 1e-3f);
      }
      // one st.global.v4 (with a runtime stride, ptxas split the plain assignment into four 4-byte stores: the
      // twenty-third session's first stride walks, 64 x 128 and 128 x 128 at 1.31-1.34x instead of 1.10-1.13x)
      asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(w + row * d_in + c0 + 8 * vec), "r"(x[p].x),
                   "r"(x[p].y), "r"(x[p].z), "r"(x[p].w) : "memory");
    }
  }
}

void run(torch::Tensor w, int64_t bm, int64_t bn, bool hint, int64_t stride) {
  auto* p = reinterpret_cast<__nv_bfloat16*>(w.data_ptr<at::BFloat16>());
  const long d_out = w.size(0), d_in = w.size(1);
  TORCH_CHECK(d_in % bn == 0 && d_out % bm == 0, "whole tiles only");
  const dim3 grid(static_cast<unsigned>(d_out / bm * stride)), block(256);
  const int s = static_cast<int>(stride);
#define WALK(M, N) \
  if (bm == M && bn == N) { \
    if (hint) walk<M, N, true><<<grid, block>>>(p, d_out, d_in, s); \
    else walk<M, N, false><<<grid, block>>>(p, d_out, d_in, s); \
    return; \
  }
  WALK(128, 64) WALK(64, 128) WALK(128, 128) WALK(32, 256)
  TORCH_CHECK(false, "no such tile");
}
"""


def save_rows(rows, numel, roofline):
    """A probe's rows with the device, torch, numel and copy roofline, to the JSON file named by argv[1] (if any)."""
    out = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, numel=numel, roofline_ms=roofline,
               rows=rows)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f, indent=1)


def main():
    ext = load_inline("zk_traversal_probe",
                      cpp_sources="void run(torch::Tensor w, int64_t bm, int64_t bn, bool hint, int64_t stride);",
                      cuda_sources=CUDA, functions=["run"], extra_cuda_cflags=["-O3", "-arch=sm_90"], verbose=False)
    device = torch.device("cuda")
    bench = timer(device)
    layers = 24
    shapes = {(2048, 2048): 4 * layers, (8192, 2048): layers, (2048, 8192): layers}
    mats = [torch.randn(d_out * count, d_in, device=device).to(torch.bfloat16) for (d_out, d_in), count in shapes.items()]
    numel = sum(m.numel() for m in mats)
    check = mats[0][:256].clone()
    for stride in (1, 2):
        ext.run(mats[0], 128, 64, True, stride)
        check = (check.float() + 1e-3).bfloat16()
        assert torch.equal(mats[0][:256], check), f"the walk's add, stride {stride}"
    roofline = copy_roofline(bench, numel, torch.bfloat16, device)
    rows = []
    for bm, bn, hint, stride in [(128, 64, False, 1), (128, 64, True, 1), (128, 64, True, 2), (128, 64, True, 4),
                                 (128, 64, False, 2), (64, 128, True, 1), (128, 128, True, 1), (32, 256, False, 1)]:
        ms = bench(lambda: [ext.run(m, bm, bn, hint, stride) for m in mats])
        rows.append(dict(bm=bm, bn=bn, l2_256b_hint=hint, stride=stride, ms=ms, x_roofline=ms / roofline))
        print(f"columns {bm:3d} x {bn:3d} {'L2::256B' if hint else 'plain   '} stride {stride} {ms:.3f} ms  "
              f"{ms / roofline:.2f}x", flush=True)
    save_rows(rows, numel, roofline)


if __name__ == "__main__":
    main()
