"""Microbenchmark of lowrank_delta_add_ (a low-rank perturbation's output update, AGZO's and ZO-Act's perturbed
forward) on OPT-1.3B's linear outputs, against eager PyTorch and the copy roofline measured in the same run.

GPU: one perturbed pass = one call per linear layer of OPT-1.3B (144: q/k/v/out 2048 -> 2048, fc1 2048 -> 8192,
fc2 8192 -> 2048) on bf16 outputs of 16 x 128 tokens, ranks RANKS; backends reference (torch ops: addcmul_ at
r = 1, else the product then add_), triton and cuda (one fused launch each). Eager: output.add_((x V) F^T), the
float32 delta formed by a matmul and added. Roofline: one read and one write of the same outputs (a copy per
layer, in the same loop). Timing: triton.testing.do_bench (device events, median) of the whole pass, so a backend
whose host is slower than its kernels is timed at its host's pace, as it runs inside a forward; device_ms (the
calls queued behind a GPU sleep, then run back to back) and host_ms beside it. --save-auto: the fastest backend
per rank class (by the timed pass) becomes "auto"'s choice for this device. CPU: a small shape, wall clock.
"""
import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_perturb import auto_choices, device_ms, host_ms, save_auto_choices, timer, write_result  # noqa: E402

import zokernels as zk  # noqa: E402
from zokernels import backends  # noqa: E402

OPT_1_3B_LAYERS = [(2048, 2048)] * 4 + [(2048, 8192), (8192, 2048)]  # (d_in, d_out) per decoder layer
TINY_LAYERS = [(64, 64)] * 4 + [(64, 256), (256, 64)]


def delta_add_class(row):
    return backends.delta_add_class(row["r"]) if row["backend"] in backends.names() else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="1,8,16,32")
    ap.add_argument("--backends", default="auto", help="comma-separated; auto: every backend available here")
    ap.add_argument("--save-auto", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/delta_add_<device>.json)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    layers, n_layers, tokens = (OPT_1_3B_LAYERS, 24, 16 * 128) if on_gpu else (TINY_LAYERS, 2, 64)
    names = [b for b in backends.names() if backends.is_available(b, device)] if args.backends == "auto" \
        else args.backends.split(",")
    gen = torch.Generator(device=device).manual_seed(0)
    run = timer(device)
    outputs = [torch.randn(tokens, d_out, device=device, generator=gen).bfloat16()
               for _ in range(n_layers) for _, d_out in layers]
    inputs = {d_in: torch.randn(tokens, d_in, device=device, generator=gen).bfloat16() for d_in, _ in layers}
    scratch = [torch.empty_like(o) for o in outputs]
    d_ins = [d_in for _ in range(n_layers) for d_in, _ in layers]
    rows = []

    def copy_pass():
        for o, s in zip(outputs, scratch):
            s.copy_(o)

    roofline = run(copy_pass)
    for r in [int(v) for v in args.ranks.split(",")]:
        bases = {d: torch.linalg.qr(torch.randn(d, r, device=device, generator=gen))[0] for d in inputs}
        xvs = {d: zk.lowrank_project(inputs[d], bases[d]) for d in inputs}  # layers fed one input share it
        factors = [1e-3 * torch.randn(o.shape[1], r, device=device, generator=gen) for o in outputs]

        def eager():
            for o, d, f in zip(outputs, d_ins, factors):
                o.add_(xvs[d] @ f.T)

        passes = {"eager matmul + add_": eager}
        for name in names:
            passes[name] = (lambda name: lambda: [zk.lowrank_delta_add_(o, inputs[d], bases[d], f, scale=1.0,
                                                                       xv=xvs[d], backend=name)
                                                 for o, d, f in zip(outputs, d_ins, factors)])(name)
        # every backend against the reference on one layer of each kind before timing (one bf16 ulp)
        for i in range(len(layers)):
            d, f = d_ins[i], 1e3 * factors[i]
            want = outputs[i].clone()
            zk.lowrank_delta_add_(want, inputs[d], bases[d], f, scale=1.0, xv=xvs[d], backend="reference")
            for name in names:
                got = outputs[i].clone()
                zk.lowrank_delta_add_(got, inputs[d], bases[d], f, scale=1.0, xv=xvs[d], backend=name)
                torch.testing.assert_close(got.float(), want.float(), rtol=2.0 ** -7, atol=1e-3)
        eager_ms = None
        for name, fn in passes.items():
            ms = run(fn)
            host = host_ms(fn, device, n=5) if on_gpu else None
            row = dict(op="lowrank_delta_add_", r=r, backend=name, ms=ms, host_ms=host,
                       kernel_ms=device_ms(fn, device, host, n=3) if on_gpu else None, roofline_ms=roofline,
                       x_roofline=ms / roofline)
            if name.startswith("eager"):
                eager_ms = ms
            else:
                row["speedup_vs_eager"] = eager_ms / ms
            rows.append(row)
            print(f"r {r:3d} {name:22s} {ms:8.3f} ms  ({row['x_roofline']:.2f}x roofline, kernels "
                  f"{row['kernel_ms'] if row['kernel_ms'] is None else round(row['kernel_ms'], 3)} ms, host "
                  f"{host if host is None else round(host, 3)} ms)", flush=True)
    result = dict(device=torch.cuda.get_device_name() if on_gpu else "cpu", torch=torch.__version__,
                  triton=getattr(sys.modules.get("triton"), "__version__", None), zokernels=zk.__version__,
                  date=datetime.date.today().isoformat(), layers=len(outputs), tokens=tokens, dtype="bfloat16",
                  roofline_ms=roofline, rows=rows)
    print(f"{result['device']}: one pass of {len(outputs)} layers, copy roofline {roofline:.3f} ms")
    print("| r | backend | ms | x roofline | x faster than eager | kernels ms | host ms |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {row['r']} | {row['backend']} | {row['ms']:.3f} | {row['x_roofline']:.2f} | "
              f"{fmt(row.get('speedup_vs_eager'))} | {fmt(row['kernel_ms'])} | {fmt(row['host_ms'])} |")
    if args.save_auto and on_gpu:
        print(f"auto choices for {result['device']}: {save_auto_choices(result, auto_choices(rows, delta_add_class))}")
    write_result(result, args.out, "delta_add")


if __name__ == "__main__":
    main()
