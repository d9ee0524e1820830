"""Microbenchmark of lowrank_combine_ on the linear layers of an OPT model, against eager PyTorch and the copy
roofline measured in the same run.

GPU: the 144 linear weights of OPT-1.3B (1.2e9 bf16 elements), one lowrank_combine_ per layer (K = 1 and 4
directions, r = 8, 16, 32, 64, nearest and stochastic rounding), device-event timing (triton.testing.do_bench,
median). Eager: per layer, N = torch.randn(d_out, r) for each direction and W.addmm_(N, V^T) (bf16). Roofline:
one read and one write of the same bytes (a copy). CPU: OPT-tiny linears, wall clock, reference backend.
Prints a table and writes JSON (default bench/results/lowrank_<device>.json).
"""
import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_perturb import OPT_1_3B, OPT_TINY, timer, write_result  # noqa: E402

import zokernels as zk  # noqa: E402


def linear_shapes(hidden, ffn, layers, **_):
    """(d_out, d_in) of every linear weight of an OPT decoder (no LM head)."""
    return [s for _ in range(layers) for s in [(hidden, hidden)] * 4 + [(ffn, hidden), (hidden, ffn)]]


def eager_lowrank(weights, bases, seed, coeffs):
    """The eager way: a Gaussian factor per layer and direction from a reseeded generator, then addmm_."""
    torch.manual_seed(seed)
    for w, v in zip(weights, bases):
        for c in coeffs:
            n = torch.randn(w.shape[0], v.shape[1], device=w.device, dtype=w.dtype)
            w.addmm_(n, v.T.to(w.dtype), alpha=c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="8,16,32,64")
    ap.add_argument("--ks", default="1,4")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dims = OPT_1_3B if device.type == "cuda" else OPT_TINY
    dtype = torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(0)
    weights = [torch.randn(s, device=device, dtype=dtype, generator=gen) * 0.02 for s in linear_shapes(**dims)]
    numel = sum(w.numel() for w in weights)
    bench = timer(device)
    src = torch.randn(numel, device=device, dtype=dtype, generator=gen)
    dst = torch.empty_like(src)
    roofline = bench(lambda: dst.copy_(src))
    del src, dst
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    backend = zk.backend_for(device, rounding="stochastic")
    print(f"device {name}: {len(weights)} linear weights, {numel / 1e9:.3f}e9 {dtype} elements; copy roofline "
          f"{roofline:.3f} ms", flush=True)
    rows = []
    seeds = iter(range(10**6))
    for r in [int(v) for v in args.ranks.split(",")]:
        bases = [torch.linalg.qr(torch.randn(w.shape[1], r, device=device))[0].contiguous() for w in weights]
        for k in [int(v) for v in args.ks.split(",")]:
            coeffs = [1e-3 / k] * k
            eager_ms = bench(lambda: eager_lowrank(weights, bases, next(seeds), coeffs))
            for rounding in ("nearest", "stochastic"):
                def fused():
                    s = next(seeds)
                    for i, (w, v) in enumerate(zip(weights, bases)):
                        zk.lowrank_combine_(w, v, seed=s, coeffs=coeffs, tensor_id=i, rounding=rounding)
                ms = bench(fused)
                rows.append(dict(r=r, K=k, rounding=rounding, ms=ms, eager_ms=eager_ms, roofline_ms=roofline,
                                 x_roofline=ms / roofline, speedup_vs_eager=eager_ms / ms))
                print(f"  r={r:<3d} K={k:<2d} {rounding:10s} {ms:8.3f} ms  {ms / roofline:5.2f}x roofline  "
                      f"eager {eager_ms:8.3f} ms ({eager_ms / ms:4.1f}x)", flush=True)
    result = dict(device=name, torch=torch.__version__, date=datetime.date.today().isoformat(), backend=backend,
                  shapes="OPT-1.3B linears" if dims is OPT_1_3B else "OPT-tiny linears", tensors=len(weights),
                  elements=numel, dtype=str(dtype), roofline_ms=roofline, rows=rows)
    print("\n| r | K | rounding | ms | x roofline | eager ms | speedup vs eager |\n|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['r']} | {x['K']} | {x['rounding']} | {x['ms']:.3f} | {x['x_roofline']:.2f} | {x['eager_ms']:.3f} | "
              f"{x['speedup_vs_eager']:.1f}x |")
    write_result(result, args.out, "lowrank")


if __name__ == "__main__":
    main()
