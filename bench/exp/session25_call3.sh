#!/usr/bin/env bash
# Twenty-fifth session, third device call. ra: this tree, the interior walk's stochastic-rounding words without the
# two-unit case (e0 % 8 == 0 there; 750-840 fewer SASS instructions per stochastic kernel), against base (the
# committed tree, shipped as _old/base; carry _old), K = 1 and 4. Then on ra: the CUDA low-rank tests, both backends'
# low-rank benchmark with --save-auto (the committed results' refresh), memcheck of the CUDA low-rank tests and
# racecheck of the tensor-core kernel, each within the time left. (ra was withdrawn after this call, 48a6175: mixed
# times; the tree no longer has it, so a rerun compares base with itself.)
start=$(date +%s); left() { echo $((585 - $(date +%s) + start)); }
VARIANTS="ra:;base::base" KS=1,4 TEST_FILES=tests/test_lowrank.py bash bench/exp/tc_variant_probe.sh
OUT=${OUT:-/tmp/out}; rm -f "$OUT/pytest_cuda.log" "$OUT/env.txt"  # the tool returns at most 8 files
cd /tmp/v_ra && export PYTHONPATH=/tmp/v_ra
timeout $(left) python3 bench/bench_lowrank.py --backend triton,cuda --save-auto \
  --out "$OUT/lowrank_triton_vs_cuda.json" 2>&1 | tee "$OUT/lowrank_triton_vs_cuda.log" | grep -E "one call" \
  | tail -n 32
cp zokernels/backends/auto_choices.json "$OUT/"; echo "both backends done, $(left) s left"
timeout $(( $(left) - 100 )) compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x \
  tests/test_lowrank.py -k cuda 2>&1 | tail -n 3 | tee "$OUT/memcheck_lowrank_cuda.log"
echo "memcheck exit ${PIPESTATUS[0]}" | tee -a "$OUT/memcheck_lowrank_cuda.log"
timeout $(left) compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py \
  -k "cuda and bfloat16 and nearest and (many_column or across_row_blocks or interior) and not 100" 2>&1 | tail -n 3 \
  | tee "$OUT/racecheck_tc.log"; echo "racecheck exit ${PIPESTATUS[0]}" | tee -a "$OUT/racecheck_tc.log"
