"""Microbenchmark of lowrank_combine_ on the linear layers of an OPT model, against eager PyTorch and the copy
roofline measured in the same run.

GPU: the 144 linear weights of OPT-1.3B (1.2e9 bf16 elements), one multi-tensor lowrank_combine_ call over all
of them (K = 1 and 4 directions, r = 8, 16, 32, 64, nearest and stochastic rounding), and for comparison one
call per layer (r = 16, K = 1); device-event timing (triton.testing.do_bench, median). --sweep times the Triton
tile shapes (BM, BN, warps, stages) of each rank bucket and rounding first and keeps the fastest; --backend cuda
times the CUDA kernel (give --out, or it replaces the Triton results file), --backend triton,cuda both in one run
(--save-auto: the faster per op class becomes "auto"'s choice); CUDA rows name the kernel that ran. Eager: per layer, N = torch.randn(d_out, r) for each direction and W.addmm_(N, V^T) (bf16). Roofline:
one read and one write of the same bytes (a copy). CPU: OPT-tiny linears, wall clock, reference backend.
Each one-call row also has device_ms: the same calls queued while the GPU sleeps, then run back to back (the
kernels' time where the host is as slow as the GPU; see host_ms). Prints a table and writes JSON (default
bench/results/lowrank_<device>.json).
"""
import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_perturb import (OPT_1_3B, OPT_TINY, auto_choices, copy_roofline, device_ms, host_ms,  # noqa: E402
                           save_auto_choices, timer, write_result)

import zokernels as zk  # noqa: E402
from zokernels import backends  # noqa: E402


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


TILE_CANDIDATES = {  # (BM, BN, warps, stages); stages > 1 at BM >= 64 only with the fp16 product
    16: [(32, 128, 8, 3), (64, 64, 4, 1), (64, 128, 8, 1), (32, 64, 4, 1), (32, 64, 4, 3)],
    32: [(32, 128, 8, 3), (64, 64, 4, 1), (64, 128, 8, 3), (32, 64, 4, 1), (32, 64, 4, 3)],
    64: [(32, 128, 8, 3), (128, 128, 8, 1), (64, 128, 8, 3), (64, 64, 4, 1), (32, 64, 4, 1), (32, 64, 4, 3)],
    128: [(16, 64, 8, 3), (32, 64, 8, 3), (32, 128, 8, 3)]}
SWEEP_CASES = {"nearest": [1e-4], "stochastic": [1e-4] * 4}  # K = 1 nearest; K = 4 stochastic (the heaviest)


def lowrank_class(row):
    """The "auto" op class of a one-call row (per-layer rows are not a choice of the op)."""
    return backends.lowrank_class(row["rounding"], row["K"], row["r"]) if row["calls"] == "one call" else None


def random_bases(weights, r, dtype=torch.float32):
    """An orthonormal [d_in, r] basis per weight (QR of a Gaussian matrix), contiguous, in `dtype`."""
    return [torch.linalg.qr(torch.randn(w.shape[1], r, device=w.device))[0].to(dtype).contiguous() for w in weights]


def cuda_kernel(backend, weights, bases):
    """Which CUDA low-rank kernel the timed call ran ("tensor_core" or "fma"; None for other backends)."""
    if backend != "cuda":
        return None
    from zokernels.backends import cuda_backend

    return cuda_backend.lowrank_kernel(weights[0].dtype, bases[0].shape[1])


def tiles_in_use():
    """The Triton kernel's tiles per rounding and padded rank, and its 16-bit product precision per padded rank."""
    from zokernels.backends import triton_backend

    out = {rounding: {str(k): list(v) for k, v in tiles.items()}
           for rounding, tiles in triton_backend.LOWRANK_TILES.items()}
    out["half_precision"] = {str(k): v for k, v in triton_backend.LOWRANK_HALF_PRECISION.items()}
    return out


def sweep_tiles(weights, bench, fused_call, ranks):
    """Time each TILE_CANDIDATES entry of the rank buckets of `ranks` for each rounding (SWEEP_CASES) and set the
    fastest in triton_backend.LOWRANK_TILES for the rest of the run."""
    from zokernels.backends import triton_backend

    out, buckets = [], {}
    for r in ranks:
        buckets.setdefault(triton_backend._rank_pad(r), r)  # one rank per bucket
    for r_pad, r in buckets.items():
        bases = random_bases(weights, r)
        for rounding, coeffs in SWEEP_CASES.items():
            timed = []
            for tiles in TILE_CANDIDATES[r_pad]:
                triton_backend.LOWRANK_TILES[rounding][r_pad] = tiles
                try:
                    ms = bench(lambda: fused_call(weights, bases, coeffs, rounding))
                except Exception as exc:  # a shape the compiler refuses (shared memory, pipeline): recorded, skipped
                    out.append(dict(r=r, r_pad=r_pad, rounding=rounding, K=len(coeffs), tiles=list(tiles),
                                    error=f"{type(exc).__name__}: {exc}"[:200]))
                    print(f"  sweep r={r} {rounding} tiles={tiles}: failed ({type(exc).__name__})", flush=True)
                    continue
                timed.append((ms, tiles))
                out.append(dict(r=r, r_pad=r_pad, rounding=rounding, K=len(coeffs), tiles=list(tiles), ms=ms))
                print(f"  sweep r={r} {rounding} K={len(coeffs)} tiles (BM, BN, warps, stages)={tiles}: "
                      f"{ms:.3f} ms", flush=True)
            triton_backend.LOWRANK_TILES[rounding][r_pad] = min(timed)[1]
    return out


def sweep_precision(weights, bench, fused_call, ranks, precisions):
    """Diagnostic: the one-call K = 1 time per rank and rounding with the 16-bit weights' product at each of
    `precisions` (LOWRANK_HALF_PRECISION values), to tell how much of the time the tensor-core product takes
    (the defaults stay)."""
    from zokernels.backends import triton_backend

    defaults, out = dict(triton_backend.LOWRANK_HALF_PRECISION), []
    for r in ranks:
        bases = random_bases(weights, r)
        for rounding in ("nearest", "stochastic"):
            for precision in precisions:
                triton_backend.LOWRANK_HALF_PRECISION[triton_backend._rank_pad(r)] = precision
                try:
                    ms = bench(lambda: fused_call(weights, bases, [1e-3], rounding))
                except Exception as exc:  # a tile the compiler refuses at this precision: recorded, skipped
                    out.append(dict(r=r, rounding=rounding, precision=precision, error=f"{type(exc).__name__}"))
                    print(f"  precision r={r} {rounding} {precision}: failed ({type(exc).__name__})", flush=True)
                    continue
                out.append(dict(r=r, rounding=rounding, precision=precision, ms=ms))
                print(f"  precision r={r} {rounding} {precision}: {ms:.3f} ms", flush=True)
    triton_backend.LOWRANK_HALF_PRECISION.update(defaults)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="8,16,32,64")
    ap.add_argument("--ks", default="1,4")
    ap.add_argument("--sweep", action="store_true", help="time tile shapes per rank bucket and use the fastest")
    ap.add_argument("--backend", default="auto",
                    help="auto, triton, cuda, or a comma-separated list: each fused row timed on each backend")
    ap.add_argument("--save-auto", action="store_true",
                    help="with two or more backends: write the fastest per low-rank op class into auto_choices.json")
    ap.add_argument("--precision", default=None,
                    help="diagnostic: comma-separated 16-bit product precisions to time (e.g. tf32,fp16)")
    ap.add_argument("--basis-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="dtype of the bases of the timed rows (the kernels widen them to fp32 as they load them)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    basis_dtype = getattr(torch, args.basis_dtype)
    ranks = [int(v) for v in args.ranks.split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dims = OPT_1_3B if device.type == "cuda" else OPT_TINY
    dtype = torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(0)
    weights = [torch.randn(s, device=device, dtype=dtype, generator=gen) * 0.02 for s in linear_shapes(**dims)]
    numel = sum(w.numel() for w in weights)
    bench = timer(device)
    roofline = copy_roofline(bench, numel, dtype, device, gen)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    names = [zk.backend_for(device, rounding="stochastic")] if args.backend == "auto" else args.backend.split(",")
    print(f"device {name}: {len(weights)} linear weights, {numel / 1e9:.3f}e9 {dtype} elements; copy roofline "
          f"{roofline:.3f} ms", flush=True)
    rows, sweep, precision = [], [], []
    seeds = iter(range(10**6))

    def fused_call(weights, bases, coeffs, rounding, backend="triton"):
        zk.lowrank_combine_(weights, bases, seed=next(seeds), coeffs=coeffs, rounding=rounding, backend=backend)

    if args.sweep and "triton" in names:
        sweep = sweep_tiles(weights, bench, fused_call, ranks)
    if args.precision and "triton" in names:
        precision = sweep_precision(weights, bench, fused_call, ranks, args.precision.split(","))
    for r in ranks:
        bases = random_bases(weights, r, basis_dtype)
        for k in [int(v) for v in args.ks.split(",")]:
            coeffs = [1e-3 / k] * k
            eager_ms = bench(lambda: eager_lowrank(weights, bases, next(seeds), coeffs))
            variants = [("one call", rounding) for rounding in ("nearest", "stochastic")]
            if r == 16 and k == 1:
                variants.append(("per layer", "nearest"))
            for (calls, rounding), b in [(v, b) for v in variants for b in names]:
                if calls == "one call":
                    call = lambda: fused_call(weights, bases, coeffs, rounding, b)  # noqa: E731
                else:
                    call = lambda: [fused_call(w, v, coeffs, rounding, b) for w, v in zip(weights, bases)]  # noqa: E731
                ms = bench(call)
                host = host_ms(call, device)
                device_only = device_ms(call, device, host) if calls == "one call" else None
                rows.append(dict(r=r, K=k, rounding=rounding, calls=calls, backend=b,
                                 kernel=cuda_kernel(b, weights, bases), ms=ms, host_ms=host, device_ms=device_only,
                                 eager_ms=eager_ms, roofline_ms=roofline, x_roofline=ms / roofline,
                                 speedup_vs_eager=eager_ms / ms))
                device_text = f"  device {device_only:6.3f} ms" if device_only is not None else ""
                print(f"  r={r:<3d} K={k:<2d} {rounding:10s} {calls:9s} {b:9s} {rows[-1]['kernel'] or '':11s} "
                      f"{ms:8.3f} ms  {ms / roofline:5.2f}x roofline  eager {eager_ms:8.3f} ms ({eager_ms / ms:4.1f}x)  host {host:6.3f} ms{device_text}",
                      flush=True)
    import triton

    result = dict(device=name, torch=torch.__version__, triton=triton.__version__,
                  date=datetime.date.today().isoformat(), backend=",".join(names),
                  shapes="OPT-1.3B linears" if dims is OPT_1_3B else "OPT-tiny linears", tensors=len(weights),
                  elements=numel, dtype=str(dtype), basis_dtype=str(basis_dtype), roofline_ms=roofline,
                  tiles=tiles_in_use(), sweep=sweep, precision=precision, rows=rows)
    print("\n| r | K | rounding | calls | backend | ms | x roofline | host ms | device ms | eager ms | speedup vs eager |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['r']} | {x['K']} | {x['rounding']} | {x['calls']} | {x['backend']} | {x['ms']:.3f} | "
              f"{x['x_roofline']:.2f} | {x['host_ms']:.3f} | "
              f"{'-' if x['device_ms'] is None else format(x['device_ms'], '.3f')} | {x['eager_ms']:.3f} | "
              f"{x['speedup_vs_eager']:.1f}x |")
    write_result(result, args.out, "lowrank")
    if args.save_auto:
        print(f"auto choices for {name}: {save_auto_choices(result, auto_choices(rows, lowrank_class))}")


if __name__ == "__main__":
    main()
