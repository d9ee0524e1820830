#!/usr/bin/env bash
# Nineteenth session's device call: build; the delta add's host profile (bench/exp/delta_add_host_profile.py);
# bench_delta_add at ranks 1 and 16 (no --save-auto); the whole step table (3 rounds); then the GPU tests of the
# low-rank, CUDA-backend, ops, AGZO and ZO-Act files in parallel with the time left. At most 8 files back.
source bench/exp/device_run.sh
build_tree
python3 bench/exp/delta_add_host_profile.py "$OUT/host_profile.json" > "$OUT/host_profile.log" 2>&1
grep -E "cuda|auto|check|views" "$OUT/host_profile.log"; rm -f "$OUT/host_profile.log"
timeout 150 python3 bench/bench_delta_add.py --ranks 1,16 --out "$OUT/delta_add.json" 2>&1 | grep -E "^r |roofline"
timeout 300 python3 bench/bench_step.py --rows eager,mezo,bszo,agzo,agzo-eager,zoact --rounds 3 \
  --out "$OUT/step.json" > "$OUT/step.log" 2>&1; echo "step rc=$? ${SECONDS}s"; grep -E "^\||round" "$OUT/step.log"
left=$((585 - SECONDS))
test_group kernels $left tests/test_lowrank.py tests/test_cuda_backend.py &
test_group ops $left tests/test_ops.py &
test_group methods $left tests/test_zo_agzo.py tests/test_zo_zoact.py &
wait
echo "total ${SECONDS}s"
