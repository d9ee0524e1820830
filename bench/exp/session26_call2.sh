#!/usr/bin/env bash
# Twenty-sixth session, second device call. base: this tree, the tensor-core geometry per padded rank and rounding
# (r = 64 stochastic now takes the prepared-fragment kernel in 64 x 128 blocks; call 1's p64r64). K = 1 and 4 at
# r = 16, 32, 64; w32: 64 x 128 prepared blocks at r = 32 (call 1: 1% faster in both roundings); p16r32 / p16r64:
# the prepared kernel at r = 16 (fp16 product; staged 64 x 128 TF32 now) in 32 x 256 / 64 x 128 blocks. Then the
# CUDA low-rank and backend tests on base, the interior test on p16r32, memcheck (all 24 cases) and racecheck (bf16)
# of the interior test on base.
SECONDS=0
VARIANTS="base:;w32:-DZK_TC_PREPARED_ROWS_R32=64::32;p16r32:-DZK_TC_PREPARED_ROWS_R16=32::16;\
p16r64:-DZK_TC_PREPARED_ROWS_R16=64::16" KS=1,4 BENCH_ARGS="--ranks 16,32,64" \
TEST_FILES="tests/test_lowrank.py tests/test_cuda_backend.py" bash bench/exp/tc_variant_probe.sh
O=${OUT:-/tmp/out}
(cd /tmp/v_p16r32 && PYTHONPATH=/tmp/v_p16r32 timeout 120 python3 -m pytest -q -x tests/test_lowrank.py \
  -k "cuda and (interior or list)" 2>&1 | tail -1 | sed 's/^/p16r32 interior and list tests: /')
cd /tmp/v_base
for tool in memcheck racecheck; do
  sel="cuda and interior"; [[ $tool == racecheck ]] && sel="cuda and bfloat16 and interior"
  PYTHONPATH=/tmp/v_base timeout $((590 - SECONDS)) compute-sanitizer --tool $tool --error-exitcode 9 \
    python3 -m pytest -q -x tests/test_lowrank.py -k "$sel" 2>&1 | tail -3 > "$O/$tool.log"
  echo "$tool exit ${PIPESTATUS[0]}: $(grep -h "SUMMARY\|passed\|failed" "$O/$tool.log" | tr '\n' ' ') ${SECONDS}s"
done
