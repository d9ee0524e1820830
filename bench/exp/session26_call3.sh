#!/usr/bin/env bash
# Twenty-sixth session, third device call: the committed tree (64 x 128 prepared blocks at r = 16 and 32, and at
# r = 64 stochastic): the CUDA table, both backends with --save-auto, memcheck of the interior and multi-tensor
# tests, racecheck of the bf16 stochastic interior cases (every prepared geometry; the staged r = 64 nearest one was
# racechecked in call 2), then the CUDA low-rank and backend tests in the time left.
SECONDS=0
CUDA_TABLE=1 MEMCHECK_K="cuda and (interior or list)" RACECHECK_K="cuda and bfloat16 and interior and stochastic" \
  bash bench/exp/final_lowrank_run.sh
timeout $((590 - SECONDS)) python3 -m pytest -q tests/test_lowrank.py tests/test_cuda_backend.py -k cuda \
  > "${OUT:-/tmp/out}/pytest_cuda.log" 2>&1; echo "tests rc=$?: $(tail -1 "${OUT:-/tmp/out}/pytest_cuda.log") ${SECONDS}s"
