"""One combine_ (K=16, Gaussian, stochastic rounding) on 2**26 bf16 elements, for ncu (launches 1-2 warm up)."""
import torch

import zokernels as zk

x = torch.randn(2**26, device="cuda", dtype=torch.bfloat16)
coeffs = torch.full((16,), 1e-4, device="cuda")
for _ in range(3):
    zk.combine_([x], seed=1, coeffs=coeffs, rounding="stochastic")
torch.cuda.synchronize()
