"""Device time of ZO-Act's input projections x V on OPT-1.3B's shapes (batch 16 x 128 tokens, bf16 inputs, r = 16):
the committed ops.lowrank_project (a float32 copy of x, then an sgemm) against the split projection
(ops.lowrank_project_split: x as stored, one bf16 GEMM with float32 output against V_hi | V_lo), per perturbed forward (24 layers
x four inputs: the shared q/k/v input, out_proj's, fc1's and fc2's) and the largest error
against float64; and the host time per call (launches queued, not waited for) of SharedProjection as the layers
call it (a new projection per call, the basis's split cached), with the split path and with float32: where a step
is host-bound, that, not the device time, is what the step pays.

python bench/exp/projection_probe.py [OUT.json]
"""
import json
import os
import sys

import torch
import triton.testing

from zokernels import ops
from zokernels.zo import subspace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_perturb import host_ms  # noqa: E402

tokens, rank, layers = 16 * 128, 16, 24
inputs = {"qkv / out_proj / fc1 input (d_in 2048)": (2048, 3), "fc2 input (d_in 8192)": (8192, 1)}
rows, total = [], {  # ms per perturbed forward
    "float32 copy + sgemm": 0.0, "split bf16 GEMM": 0.0}
for name, (d_in, per_layer) in inputs.items():
    x = torch.randn(tokens, d_in, device="cuda").to(torch.bfloat16)
    basis = torch.linalg.qr(torch.randn(d_in, rank, device="cuda", dtype=torch.float64))[0].float().contiguous()
    split = ops.split_basis(basis, x.dtype)
    exact = x.double() @ basis.double()
    scale = (x.double().abs() @ basis.double().abs()).max().item()
    old_ms = triton.testing.do_bench(lambda: ops.lowrank_project(x, basis), warmup=50, rep=300)
    new_ms = triton.testing.do_bench(lambda: ops.lowrank_project_split(x, split), warmup=50, rep=300)
    err_old = (ops.lowrank_project(x, basis).double() - exact).abs().max().item() / scale
    err_new = (ops.lowrank_project_split(x, split).double() - exact).abs().max().item() / scale
    host = {}
    for path, on in (("float32", False), ("split", True)):
        subspace.SPLIT_PROJECTION = on
        host[path] = host_ms(lambda: subspace.SharedProjection()(x, basis), x.device, n=200)
    rows.append(dict(input=name, d_in=d_in, old_ms=old_ms, new_ms=new_ms, old_rel_err=err_old, new_rel_err=err_new,
                     old_host_ms=host["float32"], new_host_ms=host["split"]))
    print(f"{name}: host per SharedProjection call {host['float32'] * 1e3:.1f} us (float32) -> "
          f"{host['split'] * 1e3:.1f} us (split)")
    total["float32 copy + sgemm"] += old_ms * per_layer * layers
    total["split bf16 GEMM"] += new_ms * per_layer * layers
    print(f"{name}: {old_ms * 1e3:.1f} us -> {new_ms * 1e3:.1f} us; error / sum|x||V| {err_old:.2e} -> {err_new:.2e}")
print("per perturbed forward (24 layers x four inputs; a ZO-Act step runs two):",
      " | ".join(f"{k} {v:.2f} ms" for k, v in total.items()))
if len(sys.argv) > 1:
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, tokens=tokens, rank=rank, rows=rows,
                   per_step_ms=total), open(sys.argv[1], "w"), indent=1)
