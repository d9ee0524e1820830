"""Compile the Triton low-rank kernel for sm_90 with a rank bucket's LOWRANK_TILES, for a bf16 weight (its
bucket's 16-bit product, LOWRANK_HALF_PRECISION; stochastic and nearest rounding; the rank a constant) and an fp32
weight (3xTF32, nearest; the rank read from the table); prints each cubin's size. No GPU needed.
Run without TRITON_INTERPRET: python -m tests.compile_lowrank_sm90 R_PAD (test_lowrank.py calls it)."""
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from zokernels.backends import triton_backend as tb

POINTER_TYPES = {"v_base": "*fp32", "f_base": "*fp32", "table": "*i64", "inputs": "*i64", "v_amax": "*fp32",
                 "coeff_ptr": "*fp32", "stream_ptr": "*i64"}
SCALAR_TYPES = {"scale": "fp32", "stream0": "i32", "K": "i32", "k0": "i32", "k1": "i32", "rk0": "i32", "rk1": "i32"}


def compile_lowrank(r_pad, dtype, stochastic, exact_rank):
    bm, bn, warps, stages = tb.LOWRANK_TILES["stochastic" if stochastic else "nearest"][r_pad]
    kernel = tb._lowrank_kernel
    constants = dict(BM=bm, BN=bn, R_PAD=r_pad, REGEN=True, COEFF_PTR=False, STREAM_PTR=False, STOCHASTIC=stochastic,
                     QUAD_R=True, ALIGNED8=True, FAST=True, WIDE_MUL=tb.WIDE_MUL, A_W=8, A_DIN=8, A_V=4,
                     R_EXACT=exact_rank,
                     DOT_PRECISION=tb._dot_precision(dtype, r_pad))
    types = {"w_base": {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32"}[dtype],
             **POINTER_TYPES, **SCALAR_TYPES}
    signature = {name: types.get(name, "constexpr") for name in kernel.arg_names}
    # pointers 16-byte aligned, as the launches specialize them
    attrs = {(kernel.arg_names.index(n),): [["tt.divisibility", 16]]
             for n in ("w_base", "v_base", "f_base", "table", "inputs")}
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))


if __name__ == "__main__":
    r_pad = int(sys.argv[1])
    for dtype, stochastic, exact_rank in [(torch.bfloat16, True, True), (torch.bfloat16, False, True),
                                          (torch.float32, False, False)]:
        compiled = compile_lowrank(r_pad, dtype, stochastic, exact_rank)
        print(f"r_pad {r_pad} {dtype} stochastic={stochastic} exact rank={exact_rank}: "
              f"{len(compiled.asm['cubin'])} cubin bytes")
