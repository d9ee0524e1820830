"""AGZO's range finder with its products in float32 (the library: x copied to float32 first) against bf16 (x read
as stored, float32 accumulation in cuBLAS, the vector rounded to bf16 before each product), on OPT-1.3B's layer
inputs (2048 tokens; d_in 2048 and 8192; rank RANKS, default 1,4; 3 power steps). Each variant is captured as a
CUDA graph (as subspace.BasisGraphs replays it) and timed by replay (triton.testing.do_bench, median); the
roofline is one read and write of x's bf16 bytes, timed in the same run. Quality: the energy ||X V||_F^2 each
basis captures, against the top-r singular values' (the best any rank-r basis can do)."""
import json
import os
import sys

import torch
from triton.testing import do_bench

from zokernels.zo import subspace

TOKENS, POWER_ITERS = 2048, 3
RANKS = [int(r) for r in os.environ.get("RANKS", "1,4").split(",")]


def activations(d_in, gen):
    """bf16 [TOKENS, d_in]: a decaying rank-16 signal plus noise (a top subspace for the range finder to find)."""
    signal = torch.randn(TOKENS, 16, device="cuda", generator=gen) * torch.logspace(0, -1.5, 16, device="cuda")
    x = signal @ torch.randn(16, d_in, device="cuda", generator=gen) + 0.05 * torch.randn(TOKENS, d_in, device="cuda",
                                                                                        generator=gen)
    return x.bfloat16()


def graphed(fn):
    """(replay, output): fn captured once as a CUDA graph after a warm-up on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def main(out_path):
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for d_in in (2048, 8192):
        x = activations(d_in, gen)
        x32 = torch.empty(x.shape, device="cuda")
        scratch = torch.empty_like(x)
        top = torch.linalg.svdvals(x.double()).pow(2)
        for rank in RANKS:
            omega = subspace._test_matrix(TOKENS, rank, 7, x.device)
            variants = {
                "float32": lambda: subspace._range_finder(x32.copy_(x), omega, POWER_ITERS),
                "bf16": lambda: subspace._range_finder(x, omega, POWER_ITERS)}
            row = dict(d_in=d_in, rank=rank, best_energy=top[:rank].sum().item())
            for name, fn in variants.items():
                replay, basis = graphed(fn)
                replay()
                row[f"{name}_ms"] = do_bench(replay, warmup=25, rep=200)
                row[f"{name}_energy"] = (x.double() @ basis.double()).pow(2).sum().item()
            row["roofline_ms"] = do_bench(lambda: scratch.copy_(x), warmup=25, rep=200)
            rows.append(row)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}; {TOKENS} tokens, {POWER_ITERS} power steps")
    print("| d_in | r | float32 ms | bf16 ms | copy ms | float32 energy / best | bf16 energy / best |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['d_in']} | {r['rank']} | {r['float32_ms']:.4f} | {r['bf16_ms']:.4f} | {r['roofline_ms']:.4f} | "
              f"{r['float32_energy'] / r['best_energy']:.6f} | {r['bf16_energy'] / r['best_energy']:.6f} |")
    with open(out_path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "range_finder_dtype_probe.json")
