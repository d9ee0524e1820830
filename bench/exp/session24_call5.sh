#!/usr/bin/env bash
# Twenty-fourth session, fifth device call: the 32 x 256 prepared-fragment kernel's main loop without per-chunk
# checks. p32e as the fourth call; p32f (+ an interior walk: where the program's rows and tiles lie inside the
# weight and its rows are 16-byte aligned, a second copy of the loop without the bounds, alignment and piece checks:
# 195 SASS instructions per tile against 735 with the fallback paths; the probe's loop has 209). Trees under _old/
# (carry _old). r = 32 against base (this tree); the CUDA low-rank tests on p32f. (As run, the call was a copy of
# this loop; tc_variant_probe.sh now takes trees.)
F="-DZK_TC_PREPARED_RANK=32 -lineinfo"
VARIANTS="base:;p32e:$F:p32e;p32f:$F:p32f" TEST_VARIANT=p32f TEST_FILES=tests/test_lowrank.py \
  BENCH_ARGS="--ranks 32" bash bench/exp/tc_variant_probe.sh
