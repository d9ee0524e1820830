"""GPU session checks that the tests do not cover: the measured error of the fast Box-Muller against the
float64 reference over a large sample (justifies the tests' Z_ATOL), and a sweep of Triton launch settings
on the OPT-1.3B parameter list. Run on a GPU: python bench/gpu_check.py [--sweep]."""
import argparse
import json
import os
import sys

import torch
import triton.testing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zokernels as zk  # noqa: E402
from bench_perturb import OPT_1_3B, copy_roofline, opt_shapes  # noqa: E402
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


VARIANTS = [dict(K_UNROLL=u, MAX_REGISTERS={"nearest": r, "stochastic": r}) for u in (1, 2) for r in (None, 64, 56, 48)]


def sweep():
    """Each variant of the Triton kernel's switches, timed on the OPT-1.3B list with the copy roofline of the same
    run (one process; tables are keyed on the switches that change them)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    params = [torch.randn(s, device="cuda", dtype=torch.bfloat16, generator=gen) for s in opt_shapes(**OPT_1_3B)]
    roofline = copy_roofline(lambda fn: triton.testing.do_bench(fn, warmup=30, rep=300, return_mode="median"),
                             sum(p.numel() for p in params), torch.bfloat16, "cuda", gen)
    coeffs16 = torch.full((16,), 1e-4, device="cuda")
    kw = dict(seed=1, backend="triton")
    ops = {
        "gauss_k1": lambda: zk.perturb_(params, scale=1e-3, **kw),
        "gauss_k1_sr": lambda: zk.perturb_(params, scale=1e-3, rounding="stochastic", **kw),
        "rad_k1": lambda: zk.perturb_(params, scale=1e-3, dist="rademacher", **kw),
        "rad_k1_sr": lambda: zk.perturb_(params, scale=1e-3, dist="rademacher", rounding="stochastic", **kw),
        "gauss_k16_sr": lambda: zk.combine_(params, coeffs=coeffs16, rounding="stochastic", **kw),
        "rad_k16_sr": lambda: zk.combine_(params, coeffs=coeffs16, rounding="stochastic", dist="rademacher", **kw),
    }
    defaults = {k: getattr(T, k) for k in VARIANTS[0]}
    rows = []
    for variant in VARIANTS:
        for k, v in variant.items():
            setattr(T, k, v)
        r = dict(variant, roofline_ms=roofline)
        for name, fn in ops.items():
            r[name] = triton.testing.do_bench(fn, warmup=30, rep=300, return_mode="median")
        print(r, "| x roofline:", {n: round(r[n] / roofline, 3) for n in ops}, flush=True)
        rows.append(r)
    for k, v in defaults.items():
        setattr(T, k, v)
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
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)
