"""Device probe (not part of the package): one build's Gaussian perturb_/combine_ on OPT-1.3B's parameter list
(bf16) against the copy roofline of the same process, and the normals' worst error against the float64 reference
(3 x 2**26 samples, as bench/gpu_check.py). Prints one JSON line. Usage: python bench/exp/gaussian_probe.py TAG
[--backend cuda] [--chunk N] [--max-tensors N]; python bench/exp/gaussian_probe.py --table FILE prints the JSON
lines of FILE as a table (bench/exp/device_run.sh's gaussian_probe collects them)."""
import argparse
import json
import os
import sys

import torch
import triton.testing

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import zokernels as zk  # noqa: E402
from bench_perturb import OPT_1_3B, opt_shapes  # noqa: E402
from zokernels import backends  # noqa: E402
from zokernels.backends import cuda_backend  # noqa: E402


def z_error(backend, n=2**26):
    worst = 0.0
    for seed, offset in [(0, 0), (2**64 - 1, 2**40 + 3), (12345, 7)]:
        got = zk.normal(n, seed=seed, offset=offset, device="cuda", backend=backend).double()
        ref = zk.normal(n, seed=seed, offset=offset, device="cuda", backend="reference").double()
        worst = max(worst, (got - ref).abs().max().item())
    return worst


def copy_roofline(params, bench):
    flat = torch.cat([p.view(-1) for p in params])
    copy = torch.empty_like(flat)
    return bench(lambda: copy.copy_(flat))


def print_table(path):
    """The probe's JSON lines as a table; fields that older lines lack print as '-'."""
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    print(f"{'variant':14s} {'chunk':>6s} {'launch':>6s} {'roof':>6s} {'K1':>7s} {'xK1':>6s} {'K1sr':>7s} {'K16':>7s} "
          f"{'K16sr':>7s} {'radK1':>7s} {'dz':>8s}")
    for r in rows:
        field = lambda key, fmt: "-" if r.get(key) is None else format(r[key], fmt)  # noqa: E731
        print(f"{r['tag']:14s} {field('chunk', 'd'):>6s} {field('max_tensors', 'd'):>6s} {r['roofline_ms']:6.3f} "
              f"{r['k1']:7.3f} {r['x_k1']:6.3f} {r['k1_sr']:7.3f} {r['k16']:7.3f} {r['k16_sr']:7.3f} "
              f"{field('rad_k1', '.3f'):>7s} {r['max_abs_dz']:8.2e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tag", nargs="?")
    ap.add_argument("--table", default=None, help="print the JSON lines of this file as a table, and nothing else")
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--chunk", type=int, default=None, help="elements per CUDA table row (default: the package's)")
    ap.add_argument("--max-tensors", type=int, default=None, help="tensors per CUDA launch (default: as built)")
    args = ap.parse_args()
    if args.table:
        return print_table(args.table)
    if args.tag is None:
        ap.error("a TAG is needed unless --table is given")
    if args.chunk:
        cuda_backend.CHUNK = args.chunk
    gen = torch.Generator(device="cuda").manual_seed(0)
    params = [torch.randn(s, device="cuda", dtype=torch.bfloat16, generator=gen) for s in opt_shapes(**OPT_1_3B)]
    bench = lambda fn: triton.testing.do_bench(fn, warmup=30, rep=400, return_mode="median")  # noqa: E731
    if args.backend == "cuda":
        assert backends.is_available("cuda", torch.device("cuda"))  # loads the extension: its launch limit is known
    if args.max_tensors:
        cuda_backend._state["max_tensors"] = args.max_tensors
    row = dict(tag=args.tag, backend=args.backend, chunk=cuda_backend.CHUNK,
               max_tensors=cuda_backend.max_tensors_per_launch(), roofline_ms=copy_roofline(params, bench))
    coeffs16 = torch.randn(16, device="cuda", generator=gen) * 1e-4
    kw = dict(seed=1, backend=args.backend)
    ops = {
        "k1": lambda: zk.perturb_(params, scale=1e-3, **kw),
        "k1_sr": lambda: zk.perturb_(params, scale=1e-3, rounding="stochastic", **kw),
        "rad_k1": lambda: zk.perturb_(params, scale=1e-3, dist="rademacher", **kw),
        "k16": lambda: zk.combine_(params, coeffs=coeffs16, **kw),
        "k16_sr": lambda: zk.combine_(params, coeffs=coeffs16, rounding="stochastic", **kw),
    }
    for name, fn in ops.items():
        row[name] = bench(fn)
    row["x_k1"] = row["k1"] / row["roofline_ms"]
    row["max_abs_dz"] = z_error(args.backend)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
