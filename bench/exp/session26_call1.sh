#!/usr/bin/env bash
# Twenty-sixth session, first device call: the prepared-fragment kernel's block geometry per rank (csrc/zo_kernels.h
# ZK_TC_PREPARED_ROWS_R32 / _R64). At r = 64: 32 x 256 (p64r32, the twenty-fifth session's p64), 64 x 128 and
# 128 x 64 (more warps of a block share one 64-column piece, so fewer fragment bytes per weight byte) against the
# staged 128 x 64 kernel (base). At r = 32: 64 x 128 and 128 x 64 against 32 x 256 (base). Then the low-rank tests
# on p64r128 (its interior test covers prepared 32 x 256 at r = 24 and prepared 128 x 64 at r = 48) and memcheck of
# the interior test there.
SECONDS=0
VARIANTS="base:;p64r32:-DZK_TC_PREPARED_ROWS_R64=32::64;p64r64:-DZK_TC_PREPARED_ROWS_R64=64::64;\
p64r128:-DZK_TC_PREPARED_ROWS_R64=128::64;p32r64:-DZK_TC_PREPARED_ROWS_R32=64::32;\
p32r128:-DZK_TC_PREPARED_ROWS_R32=128::32" BENCH_ARGS="--ranks 32,64" TEST_VARIANT=p64r128 \
TEST_FILES=tests/test_lowrank.py bash bench/exp/tc_variant_probe.sh
cd /tmp/v_p64r128 && PYTHONPATH=/tmp/v_p64r128 timeout $((590 - SECONDS)) compute-sanitizer --tool memcheck \
  --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py -k "cuda and interior" 2>&1 | tail -3 \
  | tee "${OUT:-/tmp/out}/memcheck.log"
echo "memcheck exit ${PIPESTATUS[0]} total ${SECONDS}s"
