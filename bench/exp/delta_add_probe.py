"""AGZO's perturbed-pass output update on OPT-1.3B's linear shapes (batch 16 x 128 tokens, bf16 outputs, rank 1):
the float32 delta formed by a matmul and added (before lowrank_delta_add_) against lowrank_delta_add_'s one
addcmul_, per layer kind and summed over the 144 layers of one pass; the copy of the output's bytes (read + write)
is the roofline, timed in the same run. Device-event timing (triton.testing.do_bench, median)."""
import json
import sys

import torch
from triton.testing import do_bench

import zokernels as zk

TOKENS, HIDDEN, FFN, LAYERS = 16 * 128, 2048, 8192, 24
KINDS = {"q/k/v/out (2048 -> 2048)": (HIDDEN, HIDDEN, 4), "fc1 (2048 -> 8192)": (HIDDEN, FFN, 1),
         "fc2 (8192 -> 2048)": (FFN, HIDDEN, 1)}


def main(out_path):
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows, totals = [], {"before": 0.0, "after": 0.0, "roofline": 0.0}
    for name, (d_in, d_out, per_layer) in KINDS.items():
        x = torch.randn(TOKENS, d_in, device="cuda", generator=gen).bfloat16()
        basis = torch.nn.functional.normalize(torch.randn(d_in, 1, device="cuda", generator=gen), dim=0)
        factor = 1e-3 * torch.randn(d_out, 1, device="cuda", generator=gen)
        output = torch.randn(TOKENS, d_out, device="cuda", generator=gen).bfloat16()
        xv = zk.lowrank_project(x, basis)
        scratch = torch.empty_like(output)
        before = do_bench(lambda: output.add_(zk.lowrank_delta(x, basis, factor, scale=1.0, xv=xv)), warmup=50, rep=300)
        after = do_bench(lambda: zk.lowrank_delta_add_(output, x, basis, factor, scale=1.0, xv=xv), warmup=50, rep=300)
        roofline = do_bench(lambda: scratch.copy_(output), warmup=50, rep=300)
        n = per_layer * LAYERS
        rows.append(dict(kind=name, layers=n, before_ms=before, after_ms=after, roofline_ms=roofline))
        for key, v in (("before", before), ("after", after), ("roofline", roofline)):
            totals[key] += n * v
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}; ms per layer (median)")
    print("| layer | layers | matmul + add_ ms | addcmul_ ms | copy ms | addcmul_ x copy |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['layers']} | {r['before_ms']:.4f} | {r['after_ms']:.4f} | {r['roofline_ms']:.4f} "
              f"| {r['after_ms'] / r['roofline_ms']:.2f} |")
    print(f"| one perturbed pass (144 layers) | 144 | {totals['before']:.3f} | {totals['after']:.3f} | "
          f"{totals['roofline']:.3f} | {totals['after'] / totals['roofline']:.2f} |")
    with open(out_path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows, totals_ms=totals), f,
                  indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "delta_add_probe.json")
