"""How much of the copy roofline a tile walk alone reaches: no product, no basis, no random bits. Each program of a
Triton kernel owns BM rows of a weight and walks its column tiles of BN (as the low-rank kernels' blocks do:
tall 128 x 64, wide 64 x 128), loading each [BM, BN] bf16 tile, adding a constant in float32 and storing it rounded
to nearest; or (walk "rows") owns BN columns and walks row tiles. Weights: OPT-1.3B's 144 linears stacked by shape
into three matrices (one launch each). Against the copy roofline (a contiguous copy_ of the same bytes) and a flat
1-D walk of the same add. If the tall walk alone sits near 1.2x, the traversal, not the product, sets the low-rank
kernel's floor at r >= 32 (bench/NOTES.md, twenty-second session).

python bench/exp/traversal_probe.py [OUT.json]   (a CUDA GPU; TRITON_INTERPRET unset)
"""
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_perturb import copy_roofline, timer  # noqa: E402


@triton.jit
def _add_tile(w_ptr, r, c, d_out, d_in):
    """One [BM, BN] tile at rows r, columns c: loaded, 1e-3 added in float32, stored rounded."""
    mask = (r < d_out) & (c < d_in)
    p = w_ptr + r.to(tl.int64) * d_in + c
    x = tl.load(p, mask=mask)
    tl.store(p, (x.to(tl.float32) + 1e-3).to(x.dtype), mask=mask)


@triton.jit
def _tile_walk(w_ptr, d_out, d_in, BM: tl.constexpr, BN: tl.constexpr, WALK_COLUMNS: tl.constexpr):
    pid = tl.program_id(0)
    rows = tl.arange(0, BM)[:, None]
    cols = tl.arange(0, BN)[None, :]
    if WALK_COLUMNS:  # program pid: rows [pid BM, + BM), every column tile in turn
        for c0 in range(0, d_in, BN):
            _add_tile(w_ptr, pid * BM + rows, c0 + cols, d_out, d_in)
    else:  # program pid: columns [pid BN, + BN), every row tile in turn
        for r0 in range(0, d_out, BM):
            _add_tile(w_ptr, r0 + rows, pid * BN + cols, d_out, d_in)


@triton.jit
def _flat_walk(w_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(w_ptr + offs, mask=offs < n)
    tl.store(w_ptr + offs, (x.to(tl.float32) + 1e-3).to(x.dtype), mask=offs < n)


def main():
    device = torch.device("cuda")
    bench = timer(device)
    layers = 24
    shapes = {(2048, 2048): 4 * layers, (8192, 2048): layers, (2048, 8192): layers}  # (d_out, d_in): count
    mats = [torch.randn(d_out * count, d_in, device=device).to(torch.bfloat16) for (d_out, d_in), count in shapes.items()]
    numel = sum(m.numel() for m in mats)
    roofline = copy_roofline(bench, numel, torch.bfloat16, device)
    rows = []

    def record(name, fn):
        ms = bench(fn)
        rows.append(dict(walk=name, ms=ms, x_roofline=ms / roofline))
        print(f"{name:28s} {ms:.3f} ms  {ms / roofline:.2f}x", flush=True)

    record("flat 1-D (4096 per program)", lambda: [_flat_walk[(triton.cdiv(m.numel(), 4096),)](m, m.numel(), BLOCK=4096,
                                                                                             num_warps=8) for m in mats])
    for walk_columns, bm, bn in [(True, 128, 64), (True, 64, 128), (True, 32, 256), (True, 16, 512), (True, 256, 64),
                                 (True, 128, 128), (False, 128, 64), (False, 64, 128)]:
        name = f"{'columns' if walk_columns else 'rows'} {bm} x {bn}"
        grid = (lambda m: (triton.cdiv(m.shape[0], bm),)) if walk_columns else (lambda m: (triton.cdiv(m.shape[1], bn),))
        record(name, lambda grid=grid, bm=bm, bn=bn, wc=walk_columns: [
            _tile_walk[grid(m)](m, m.shape[0], m.shape[1], BM=bm, BN=bn, WALK_COLUMNS=wc, num_warps=8) for m in mats])
    out = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               numel=numel, roofline_ms=roofline, rows=rows)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
