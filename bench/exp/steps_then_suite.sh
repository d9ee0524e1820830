#!/usr/bin/env bash
# Build, the whole step table (every row, agzo-eager included; 3 rounds), then the test groups GROUPS (default:
# those the delta-add call did not run) in parallel pytest processes with the time left. At most 8 files back.
source bench/exp/device_run.sh
build_tree
timeout 300 python3 bench/bench_step.py --rows eager,mezo,bszo,agzo,agzo-eager,zoact --rounds 3 \
  --out "$OUT/step.json" > "$OUT/step.log" 2>&1; echo "step rc=$? ${SECONDS}s"; grep -E "^\||round" "$OUT/step.log"
left=$((585 - SECONDS))
test_group kernels $left tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py \
  tests/test_contract.py &
test_group ops $left tests/test_ops.py tests/test_examples.py tests/test_optim.py &
test_group steps $left tests/test_zo_bszo.py tests/test_zo_mezo.py tests/test_zo_perturbation.py &
wait
echo "total ${SECONDS}s"
