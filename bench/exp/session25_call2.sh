#!/usr/bin/env bash
# Twenty-fifth session, second device call. base: this tree, the interior walk in every tensor-core geometry
# (call 1's stg). With it, which geometry is fastest at r = 32 (s0: the staged 128 x 64 TF32 kernel, the prepared
# rank off; s0h: that with the fp16 product; s0w / s0wh: 64 x 128 TF32 / fp16), at r = 16 (h16: the fp16 product)
# and at r = 64 (p64: 32 x 256 prepared, call 1's stochastic 1.821 against 1.886)? Then the CUDA low-rank tests on
# base (the interior test now covers every geometry) and memcheck of the interior test.
SECONDS=0
P0=-DZK_TC_PREPARED_RANK=0
VARIANTS="base:;s0:$P0::32;s0h:$P0 -DZK_TC_HALF_MIN_RANK=32::32;s0w:$P0 -DZK_TC_WIDE_MAX_RANK=32::32;\
s0wh:$P0 -DZK_TC_WIDE_MAX_RANK=32 -DZK_TC_HALF_MIN_RANK=32::32;h16:-DZK_TC_HALF_MIN_RANK=16::16;\
p64:-DZK_TC_PREPARED_RANK=64::64" TEST_FILES=tests/test_lowrank.py bash bench/exp/tc_variant_probe.sh
cd /tmp/v_base && PYTHONPATH=/tmp/v_base timeout $((590 - SECONDS)) compute-sanitizer --tool memcheck \
  --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py -k "cuda and interior" 2>&1 | tail -3 \
  | tee "${OUT:-/tmp/out}/memcheck.log"
echo "memcheck exit ${PIPESTATUS[0]} total ${SECONDS}s"
