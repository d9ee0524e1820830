#!/usr/bin/env bash
# Twenty-fifth session, first device call. (1) The committed tree (b147c8c: the binding's d_in collected in the
# check loop, never built on a GPU before) with and without -lineinfo at r = 32: the twenty-fourth session's p32f
# measured 1.393 / 1.659 with -lineinfo, the committed build 1.360 / 1.510. (2) ZK_TC_PREPARED_RANK=64 (32 x 256
# with prepared fragments at r = 64; 8-12 B spill) against the default's 128 x 64 at r = 64. (3) stg: the interior
# walk for the staged kernels too (tree _old/stg, carry _old) at r = 8, 16, 64. Then the CUDA tests: low-rank and
# CUDA-backend on base, low-rank on p64 and stg.
SECONDS=0
VARIANTS="base:;lineinfo:-lineinfo::32;p64:-DZK_TC_PREPARED_RANK=64::64;stg::stg:8,16,64" \
  TEST_FILES="tests/test_lowrank.py tests/test_cuda_backend.py" bash bench/exp/tc_variant_probe.sh
log() { echo "${OUT:-/tmp/out}/pytest_lowrank_$1.log"; }
for v in p64 stg; do
  (( SECONDS < 550 )) || { echo "$v tests: no time left"; continue; }
  (cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v timeout $((590 - SECONDS)) python3 -m pytest -q tests/test_lowrank.py -k cuda \
     > "$(log $v)" 2>&1); echo "$v tests rc=$?: $(tail -n 1 "$(log $v)")"
done
