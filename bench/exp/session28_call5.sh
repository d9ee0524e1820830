#!/usr/bin/env bash
# Twenty-eighth session, fifth device call (H100): the geometry per rank and rounding was chosen on the H200. On the
# H100 r = 64 stochastic (prepared 64 x 128) took 2.13 ms, slower than the staged kernel's 2.07 there before the
# interior walk; and at r = 16 nearest Triton beat CUDA (1.735 / 1.764 ms). st: the staged kernels at r = 16 and
# r = 64 stochastic (-DZK_TC_PREPARED_ROWS_R16=0 -DZK_TC_PREPARED_ROWS_R64_SR=0) against base, K = 1, r = 16, 64.
VARIANTS="base:;st:-DZK_TC_PREPARED_ROWS_R16=0 -DZK_TC_PREPARED_ROWS_R64_SR=0" BENCH_ARGS="--ranks 16,64" TESTS=0 \
  bash bench/exp/tc_variant_probe.sh
