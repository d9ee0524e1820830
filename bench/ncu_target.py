"""One launch to profile with ncu (launches 1-2 warm up).

python bench/ncu_target.py [combine ROUNDING BACKEND]: combine_ (K=16, Gaussian; default stochastic rounding,
backend "auto") on 2**26 bf16 elements, e.g. `combine nearest cuda`.
python bench/ncu_target.py lowrank R ROUNDING BACKEND [LAYERS]: lowrank_combine_ (K = 1) at rank R over the linears of
LAYERS (default four; 24 is the benchmark's whole list) OPT-1.3B decoder layers (bf16, 5.0e7 elements per layer),
e.g. `lowrank 8 stochastic cuda`.
"""
import sys

import torch

import zokernels as zk

if len(sys.argv) > 1 and sys.argv[1] == "lowrank":
    r, rounding, backend = int(sys.argv[2]), sys.argv[3], sys.argv[4]
    layers = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    shapes = [(2048, 2048)] * 4 + [(8192, 2048), (2048, 8192)]
    weights = [torch.randn(s, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(layers) for s in shapes]
    bases = [torch.linalg.qr(torch.randn(w.shape[1], r, device="cuda"))[0].contiguous() for w in weights]
    for seed in range(3):
        zk.lowrank_combine_(weights, bases, seed=seed, coeffs=[1e-3], rounding=rounding, backend=backend)
else:
    rounding, backend = sys.argv[2:4] if len(sys.argv) > 1 and sys.argv[1] == "combine" else ("stochastic", "auto")
    x = torch.randn(2**26, device="cuda", dtype=torch.bfloat16)
    coeffs = torch.full((16,), 1e-4, device="cuda")
    for _ in range(3):
        zk.combine_([x], seed=1, coeffs=coeffs, rounding=rounding, backend=backend)
torch.cuda.synchronize()
