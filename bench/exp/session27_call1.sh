#!/usr/bin/env bash
# Twenty-seventh session, first device call: the twenty-sixth session's call 3 again (its files were lost with that
# session): the committed tree's CUDA table, both backends with --save-auto, memcheck of the interior and
# multi-tensor tests, racecheck of the bf16 stochastic interior cases.
CUDA_TABLE=1 MEMCHECK_K="cuda and (interior or list)" RACECHECK_K="cuda and bfloat16 and interior and stochastic" \
  bash bench/exp/final_lowrank_run.sh
rm -f "${OUT:-/tmp/out}/build_main.log"
