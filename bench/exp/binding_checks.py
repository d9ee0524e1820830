"""Device probe of the low-rank binding's TORCH_CHECKs, one case per process. On the H100 (2026-11-24) "k0" raised
as it should, while "rank65" and "fp32" (the tensor-core check, whose message formats values) crashed the process:
see bench/NOTES.md, eighth session."""
import sys

import torch

from zokernels.backends import cuda_backend

cuda_backend._load()
case = sys.argv[1]
dtype, r, K = {"k0": (torch.bfloat16, 16, 0), "rank65": (torch.bfloat16, 65, 1), "fp32": (torch.float32, 16, 1),
               "ok": (torch.bfloat16, 16, 1)}[case]
w = torch.randn(8, 70, device="cuda").to(dtype)
v = torch.randn(70, r, device="cuda")
table = cuda_backend._lowrank_table([w], [r], [0], "tensor_core")
try:
    torch.ops.zokernels.lowrank_combine_([w], [v], [], table, None, 1.0, None, 0, K, 0, 0, 0, 0, False, True)
    torch.cuda.synchronize()
    print(case, "ran")
except RuntimeError as exc:
    print(case, "raised:", str(exc).splitlines()[0][:150])
