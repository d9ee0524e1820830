#!/usr/bin/env bash
# Ninth session, fourth device call: build this tree, the low-rank benchmark of both backends (K = 1 and 4) with
# --save-auto, memcheck of the CUDA low-rank tests, racecheck of the tensor-core kernel (bf16,
# nearest: r 16, 24 with the chunk swap, 64 without).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
git log --oneline -1 2>/dev/null | sed 's/^/device tree (may be stale): /'
SECONDS=0
rm -rf build zokernels/_C*.so; ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; echo "build rc=$? ${SECONDS}s"
timeout 260 python3 bench/bench_lowrank.py --backend triton,cuda --save-auto --out "$OUT/lowrank_triton_vs_cuda.json" 2>&1 \
  | tee "$OUT/lowrank.log" | grep -E "one call|per layer|auto choices" | head -40
cp zokernels/backends/auto_choices.json "$OUT/"
echo "bench done ${SECONDS}s"
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py -k cuda 2>&1 \
  | tail -3 | tee "$OUT/memcheck_lowrank_cuda.log"; echo "memcheck exit ${PIPESTATUS[0]}" | tee -a "$OUT/memcheck_lowrank_cuda.log"
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py \
  -k "cuda and bfloat16 and nearest and (many_column or across_row_blocks) and not 100" 2>&1 | tail -3 | tee "$OUT/racecheck_tc.log"
echo "racecheck exit ${PIPESTATUS[0]}" | tee -a "$OUT/racecheck_tc.log"
echo "total ${SECONDS}s"
