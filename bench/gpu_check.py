"""GPU session checks that the tests do not cover: the measured error of the fast Box-Muller against the
float64 reference over a large sample (justifies the tests' Z_ATOL), and a sweep of Triton launch settings
on the OPT-1.3B parameter list. Run on a GPU: python bench/gpu_check.py [--sweep]."""
import argparse
import itertools
import json
import os
import sys

import torch
import triton.testing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zokernels as zk  # noqa: E402
from bench_perturb import OPT_1_3B, opt_shapes  # noqa: E402
from zokernels.backends import triton_backend as T  # noqa: E402


def z_error(n=2**26):
    worst = dict(max_abs=0.0, max_rel_tail=0.0, nonfinite=0)
    for seed, offset in [(0, 0), (2**64 - 1, 2**40 + 3), (12345, 7)]:
        got = zk.normal(n, seed=seed, offset=offset, device="cuda", backend="triton")
        ref = zk.normal(n, seed=seed, offset=offset, device="cuda", backend="reference")
        err = (got.double() - ref.double()).abs()
        worst["max_abs"] = max(worst["max_abs"], err.max().item())
        worst["max_rel_tail"] = max(worst["max_rel_tail"], (err / ref.double().abs().clamp_min(1.0)).max().item())
        worst["nonfinite"] += int((~torch.isfinite(got)).sum())
        worst["max_abs_z"] = max(worst.get("max_abs_z", 0.0), got.abs().max().item())
    return worst


def sweep():
    gen = torch.Generator(device="cuda").manual_seed(0)
    params = [torch.randn(s, device="cuda", dtype=torch.bfloat16, generator=gen) for s in opt_shapes(**OPT_1_3B)]
    coeffs16 = torch.full((16,), 1e-4, device="cuda")
    rows = []
    defaults = (T.TILE, T.NUM_WARPS, T.WIDE_MUL)
    for wide, tile, warps in itertools.product((True,), (512, 1024, 2048), (2, 4, 8)):
        T.TILE, T.NUM_WARPS, T.WIDE_MUL = tile, warps, wide
        r = dict(wide_mul=wide, tile=tile, warps=warps)
        r["gauss_k1"] = triton.testing.do_bench(lambda: zk.perturb_(params, seed=1, scale=1e-3), warmup=30, rep=200, return_mode="median")
        r["rad_k1"] = triton.testing.do_bench(lambda: zk.perturb_(params, seed=1, scale=1e-3, dist="rademacher"), warmup=30, rep=200, return_mode="median")
        r["gauss_k16_sr"] = triton.testing.do_bench(lambda: zk.combine_(params, seed=1, coeffs=coeffs16, rounding="stochastic"), warmup=10, rep=300, return_mode="median")
        print(r, flush=True)
        rows.append(r)
    T.TILE, T.NUM_WARPS, T.WIDE_MUL = defaults
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = dict(device=torch.cuda.get_device_name(), z_error=z_error())
    print(res, flush=True)
    if a.sweep:
        res["sweep"] = sweep()
        best = min(res["sweep"], key=lambda r: r["gauss_k1"] / res["sweep"][0]["gauss_k1"] + r["gauss_k16_sr"] / res["sweep"][0]["gauss_k16_sr"])
        print(f"best: tile {best['tile']} warps {best['warps']}")
        with open(os.path.join(os.path.dirname(a.out or "."), "best.env"), "w") as f:
            f.write(f"export ZOKERNELS_TRITON_TILE={best['tile']} ZOKERNELS_TRITON_WARPS={best['warps']}\n")
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)
