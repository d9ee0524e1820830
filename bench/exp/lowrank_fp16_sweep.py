"""Experiment: the low-rank kernel's tile sweep with its product in scaled fp16 (triton_backend._pow2_scaled_f16)
for bf16 weights, with pipelined candidates that the 1xTF32 dot could not compile. Usage:
python bench/exp/lowrank_fp16_sweep.py [bench_lowrank.py arguments]"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import bench_lowrank  # noqa: E402
from zokernels.backends import triton_backend  # noqa: E402

triton_backend.LOWRANK_DOT_PRECISION[torch.bfloat16] = "fp16"
for r_pad, extra in {16: [(64, 128, 8, 3), (64, 64, 4, 3)], 32: [(64, 128, 8, 3), (64, 64, 4, 3)],
                     64: [(128, 128, 8, 2), (64, 128, 8, 3), (128, 64, 8, 3)]}.items():
    bench_lowrank.TILE_CANDIDATES[r_pad] = bench_lowrank.TILE_CANDIDATES[r_pad] + extra
bench_lowrank.main(["--sweep"] + sys.argv[1:])
