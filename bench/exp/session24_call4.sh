#!/usr/bin/env bash
# Twenty-fourth session, fourth device call: the 32 x 256 prepared-fragment kernel's main loop. p32c as the third
# call; p32e (+ the warp's A fragments held in registers, not read from shared memory per tile); p32d (p32e's tree
# with ZK_TC_PREPARED_ROWS=128: a program takes 128 rows and walks them as four 32-row slices, M formed once, so the
# per-program start (table, finiteness, M, barriers) is paid once per 128 rows). Trees under _old/ (carry _old;
# their code: results/raw/2026-12-03j_tc_prepared_p32abcdef_on_77d870a.patch). r = 32 against base (this tree); the
# CUDA low-rank tests on p32d. (As run, the call was a copy of this loop; tc_variant_probe.sh now takes trees.)
F="-DZK_TC_PREPARED_RANK=32 -lineinfo"
VARIANTS="base:;p32c:$F:p32c;p32e:$F:p32e;p32d:$F -DZK_TC_PREPARED_ROWS=128:p32e" TEST_VARIANT=p32d \
  TEST_FILES=tests/test_lowrank.py BENCH_ARGS="--ranks 32" bash bench/exp/tc_variant_probe.sh
