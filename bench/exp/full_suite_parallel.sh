#!/usr/bin/env bash
# The whole test suite on the GPU in three pytest processes at once (Triton compiles on the CPU cores), after an
# ahead-of-time build; one log per group and the summary lines. Keeps a device call under its 600 s limit. STEPS=1:
# then the step table, where time is left.
source bench/exp/device_run.sh
build_tree  # stops with the build log where no extension came out
test_group kernels 480 tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py \
  tests/test_contract.py &
test_group ops 480 tests/test_ops.py tests/test_subspace.py tests/test_examples.py tests/test_optim.py &
test_group steps 480 tests/test_zo_agzo.py tests/test_zo_bszo.py tests/test_zo_mezo.py tests/test_zo_perturbation.py \
  tests/test_zo_zoact.py &
wait
echo "suite ${SECONDS}s"
if [[ "${STEPS:-0}" == 1 && $SECONDS -lt 470 ]]; then  # the step table after the suite (alone on the GPU)
  timeout $((590 - SECONDS)) python3 bench/bench_step.py --out "$OUT/step.json" 2>&1 | tail -12
fi
