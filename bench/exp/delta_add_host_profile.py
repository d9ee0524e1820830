"""Host time per lowrank_delta_add_ call, piece by piece (ops.py's checks, the backend resolution, the operand
views, the extension op itself): where the 23 us per call of the H200's host go (bench/NOTES.md, eighteenth and
nineteenth sessions). Small operands (16 tokens), so that the kernels stay far behind the host; each figure is the
mean of N calls after a warm-up, in us, the GPU synchronised after each batch. Usage: delta_add_host_profile.py
[out.json]. On a machine without the CUDA extension the cuda rows are skipped."""
import json
import sys
import time

import torch

import zokernels as zk
from zokernels import backends, ops


def per_call_us(fn, device, n=2000):
    for _ in range(200):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e6


def main():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device=device).manual_seed(0)
    rows = {}
    for r in (1, 16):
        x = torch.randn(16, 2048, device=device, generator=gen).bfloat16()
        basis = torch.linalg.qr(torch.randn(2048, r, device=device, generator=gen))[0]
        factor = 1e-3 * torch.randn(2048, r, device=device, generator=gen)
        out = torch.randn(16, 2048, device=device, generator=gen).bfloat16()
        xv = zk.lowrank_project(x, basis)
        op = backends.delta_add_class(r)
        pieces = {
            "lowrank_delta_add_ auto": lambda: zk.lowrank_delta_add_(out, x, basis, factor, scale=1.0, xv=xv),
            "_check_delta": lambda: ops._check_delta(x, basis, factor, 1.0, xv),
            "resolve auto": lambda: backends.resolve("auto", out.device, op),
            "recorded": lambda: torch.is_grad_enabled() and any(t.requires_grad for t in (out, xv, factor)),
            "views as before (view, reshape, contiguous)": lambda: (out.view(-1, factor.shape[0]),
                                                                    xv.reshape(-1, r).contiguous(), factor.contiguous()),
            "aten add_ (dispatcher floor)": lambda: out.add_(0.0),
        }
        for name in ("reference", "cuda", "triton"):
            if backends.is_available(name, device):
                pieces[f"lowrank_delta_add_ {name}"] = (lambda name: lambda: zk.lowrank_delta_add_(
                    out, x, basis, factor, scale=1.0, xv=xv, backend=name))(name)
                pieces[f"resolve {name}"] = (lambda name: lambda: backends.resolve(name, out.device, op))(name)
        if backends.is_available("cuda", device):
            pieces["torch.ops.zokernels.lowrank_delta_add_"] = lambda: torch.ops.zokernels.lowrank_delta_add_(
                out, xv, factor, 1.0)
        with torch.no_grad():
            for name, fn in pieces.items():
                rows[f"r={r} {name}"] = per_call_us(fn, device)
    result = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", torch=torch.__version__,
                  us_per_call=rows)
    for k, v in rows.items():
        print(f"{k:50s} {v:7.2f} us")
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
