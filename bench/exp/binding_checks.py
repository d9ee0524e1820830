"""Device probe of the CUDA bindings' TORCH_CHECKs, one case per process (a crash takes only its own case).
On the H100 (2026-11-24) "k0" (literal message) raised as it should, while "rank65" and "fp32" (the tensor-core
check, whose message formats values) crashed the process: see bench/NOTES.md, eighth and ninth sessions.
Cases: ok, k0, fp32, rank65 (low-rank tensor-core guard), int_dtype (dtype_code's formatted message),
combine129 (combine_'s formatted tensor-count check), rank129 (the basis check, formatted)."""
import sys

import torch

from zokernels.backends import cuda_backend

cuda_backend._load()
case = sys.argv[1]
try:
    if case == "combine129":
        xs = [torch.zeros(8, device="cuda") for _ in range(129)]
        table = torch.zeros(1, 6, dtype=torch.int64, device="cuda")
        torch.ops.zokernels.combine_(xs, xs, table, None, 1.0, None, 0, 1, 0, 0, 0, 0, True, False)
    else:
        dtype, r, K = {"k0": (torch.bfloat16, 16, 0), "rank65": (torch.bfloat16, 65, 1),
                       "fp32": (torch.float32, 16, 1), "ok": (torch.bfloat16, 16, 1),
                       "int_dtype": (torch.int32, 16, 1), "rank129": (torch.bfloat16, 129, 1)}[case]
        w = torch.randn(8, 70, device="cuda").to(dtype)
        v = torch.randn(70, r, device="cuda")
        table = cuda_backend._lowrank_table([w], [min(r, 64)], [0], "tensor_core", 64, "nearest")
        torch.ops.zokernels.lowrank_combine_([w], [v], [], table, None, 1.0, None, 0, K, 0, 0, 0, 0, False, True)
    torch.cuda.synchronize()
    print(case, "ran")
except RuntimeError as exc:
    print(case, "raised:", str(exc).splitlines()[0][:150])
