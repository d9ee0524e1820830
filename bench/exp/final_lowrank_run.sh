#!/usr/bin/env bash
# After a low-rank kernel change: build this tree, the low-rank benchmark of both backends (K = 1 and 4) with
# --save-auto, memcheck of the CUDA low-rank tests, racecheck of the tensor-core kernel (bf16, nearest: r 16 wide
# blocks, 24 TF32 tall, 64 fp16; RACECHECK_K: its -k instead). SANITIZE=0 skips the sanitizers; MEMCHECK_K: the
# memcheck's -k (default "cuda");
# CUDA_TABLE=1 first runs the CUDA-only table (lowrank_cuda.json: results/lowrank_cuda_<device>.json); STEPS=1 adds
# the step table (bench/bench_step.py).
source bench/exp/device_run.sh
build "$ROOT" "" main
[[ "${CUDA_TABLE:-0}" == 1 ]] && bench_lowrank "$ROOT" cuda --backend cuda --ks 1,4
bench_lowrank "$ROOT" triton_vs_cuda --backend triton,cuda --save-auto
cp zokernels/backends/auto_choices.json "$OUT/"
echo "bench done ${SECONDS}s"
if [[ "${SANITIZE:-1}" == 1 ]]; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py -k "${MEMCHECK_K:-cuda}" 2>&1 \
    | tail -3 | tee "$OUT/memcheck_lowrank_cuda.log"; echo "memcheck exit ${PIPESTATUS[0]}" | tee -a "$OUT/memcheck_lowrank_cuda.log"
  timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py \
    -k "${RACECHECK_K:-cuda and bfloat16 and nearest and (many_column or across_row_blocks or interior) and not 100}" \
    2>&1 | tail -3 | tee "$OUT/racecheck_tc.log"
  echo "racecheck exit ${PIPESTATUS[0]}" | tee -a "$OUT/racecheck_tc.log"
fi
if [[ "${STEPS:-0}" == 1 ]]; then
  timeout $((590 - SECONDS)) python3 bench/bench_step.py --out "$OUT/step.json" 2>&1 | tee "$OUT/step.log" | tail -12
fi
echo "total ${SECONDS}s"
