#!/usr/bin/env bash
# Ninth session, ninth device call: low-rank programs longest first (this tree) against weight order (a copy of
# the tree with the previous launch.py, bench/exp/launch_weight_order.py.txt; the same built extension).
# bench_lowrank of both backends: weight order K = 1, then longest first K = 1 and 4 with --save-auto; the
# low-rank, CUDA and auto tests on this tree.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
rm -rf build zokernels/_C*.so; ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; echo "build rc=$? ${SECONDS}s"
mkdir -p /tmp/old && cp -r csrc zokernels setup.py bench tests /tmp/old/ && cp bench/exp/launch_weight_order.py.txt /tmp/old/zokernels/backends/launch.py
echo "== weight order"
(cd /tmp/old && PYTHONPATH=/tmp/old timeout 150 python3 bench/bench_lowrank.py --backend triton,cuda --ks 1 --out "$OUT/lowrank_weight_order.json" 2>&1 \
   | tee "$OUT/bench_weight_order.log" | grep -E "one call" | head -16)
echo "== longest first"
PYTHONPATH=$ROOT timeout 260 python3 bench/bench_lowrank.py --backend triton,cuda --save-auto --out "$OUT/lowrank_triton_vs_cuda.json" 2>&1 \
   | tee "$OUT/bench_longest_first.log" | grep -E "one call|per layer|auto choices" | head -40
cp zokernels/backends/auto_choices.json "$OUT/"
echo "bench ${SECONDS}s"
PYTHONPATH=$ROOT timeout 170 python3 -m pytest -q -x tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py 2>&1 \
  | tee "$OUT/pytest.log" | tail -1
echo "total ${SECONDS}s"
