"""AGZO's perturbed-pass output update on OPT-1.3B's linear shapes (batch 16 x 128 tokens, bf16 outputs, RANK
(default 1)): the float32 delta formed by a matmul and added (before lowrank_delta_add_) against
lowrank_delta_add_ on the reference (addcmul_ at r = 1) and on Triton (one fused launch), per layer kind and
summed over the 144 layers of one pass; the copy of the output's bytes (read + write) is the roofline, timed in
the same run. Device-event timing (triton.testing.do_bench, median)."""
import json
import os
import sys

import torch
from triton.testing import do_bench

import zokernels as zk

TOKENS, HIDDEN, FFN, LAYERS = 16 * 128, 2048, 8192, 24
RANK = int(os.environ.get("RANK", 1))
KINDS = {"q/k/v/out (2048 -> 2048)": (HIDDEN, HIDDEN, 4), "fc1 (2048 -> 8192)": (HIDDEN, FFN, 1),
         "fc2 (8192 -> 2048)": (FFN, HIDDEN, 1)}


def main(out_path):
    gen = torch.Generator(device="cuda").manual_seed(0)
    variants = ("before", "reference", "triton", "roofline")
    rows, totals = [], dict.fromkeys(variants, 0.0)
    for name, (d_in, d_out, per_layer) in KINDS.items():
        x = torch.randn(TOKENS, d_in, device="cuda", generator=gen).bfloat16()
        basis = torch.linalg.qr(torch.randn(d_in, RANK, device="cuda", generator=gen))[0]
        factor = 1e-3 * torch.randn(d_out, RANK, device="cuda", generator=gen)
        output = torch.randn(TOKENS, d_out, device="cuda", generator=gen).bfloat16()
        xv = zk.lowrank_project(x, basis)
        scratch = torch.empty_like(output)
        timed = dict(
            before=lambda: output.add_(zk.lowrank_delta(x, basis, factor, scale=1.0, xv=xv)),
            reference=lambda: zk.lowrank_delta_add_(output, x, basis, factor, scale=1.0, xv=xv, backend="reference"),
            triton=lambda: zk.lowrank_delta_add_(output, x, basis, factor, scale=1.0, xv=xv, backend="triton"),
            roofline=lambda: scratch.copy_(output))
        checked = [output.clone() for _ in range(2)]  # the two backends agree to one bf16 ulp before timing
        for out, backend in zip(checked, ("reference", "triton")):
            zk.lowrank_delta_add_(out, x, basis, 1e3 * factor, scale=1.0, xv=xv, backend=backend)
        torch.testing.assert_close(checked[1].float(), checked[0].float(), rtol=2.0 ** -7, atol=1e-3)
        row = dict(kind=name, layers=per_layer * LAYERS)
        for key, fn in timed.items():
            row[key] = do_bench(fn, warmup=50, rep=300)
            totals[key] += row["layers"] * row[key]
        rows.append(row)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, rank {RANK}; ms per layer (median)")
    print("| layer | layers | matmul + add_ ms | reference (addcmul_) ms | Triton ms | copy ms | Triton x copy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows + [dict(kind="one perturbed pass (sum)", layers=144, **totals)]:
        print(f"| {r['kind']} | {r['layers']} | " + " | ".join(f"{r[v]:.4f}" for v in variants)
              + f" | {r['triton'] / r['roofline']:.2f} |")
    with open(out_path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rank=RANK, rows=rows, totals_ms=totals), f,
                  indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "delta_add_probe.json")
