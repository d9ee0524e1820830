#!/usr/bin/env bash
# Twenty-third session, seventh device call: the tensor-core kernel with prepared basis fragments at r = 32
# (ZK_TC_PREPARED_RANK=32: 32 x 256 blocks, V's fp16 fragments written per launch by a small kernel, read from
# global memory) against the default build, r = 16 / 32 / 64, then the CUDA low-rank tests on the prepared build.
VARIANTS="base:;p32:-DZK_TC_PREPARED_RANK=32" TEST_VARIANT=p32 BENCH_ARGS="--ranks 16,32,64" \
  bash bench/exp/tc_variant_probe.sh
