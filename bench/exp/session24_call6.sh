#!/usr/bin/env bash
# Twenty-fourth session, sixth device call (the session's last ~400 s): this tree with the prepared rank on by
# default (ZK_TC_PREPARED_RANK=32: 32 x 256 blocks, fp16 basis fragments prepared per launch, the interior walk).
# Build, the CUDA low-rank tests (all of tests/test_lowrank.py's CUDA cases, the new interior test among them) and
# the multi-launch tests of test_cuda_backend.py, the CUDA low-rank benchmark (r 8-64, K 1 and 4) against eager
# and the copy roofline, then memcheck of the prepared-rank tests with the time left.
source bench/exp/device_run.sh
build_tree
echo "build ${SECONDS}s"
test_group lowrank 90 tests/test_lowrank.py -k cuda
test_group backend 90 tests/test_cuda_backend.py -k "more_tensors_than_one_launch or several_launches"
bench_lowrank "$ROOT" cuda --backend cuda --ks 1,4
python3 bench/exp/lowrank_table.py "$OUT" cuda
echo "bench done ${SECONDS}s"
left=$((280 - SECONDS))
if (( left > 30 )); then
  timeout $left compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py \
    -k "cuda and (prepared_rank or (across_row_blocks and 24) or (many_row_blocks and 24))" 2>&1 | tail -3 \
    | tee "$OUT/memcheck_prepared.log"; echo "memcheck exit ${PIPESTATUS[0]}" | tee -a "$OUT/memcheck_prepared.log"
fi
echo "total ${SECONDS}s"
