#!/usr/bin/env bash
# Nineteenth session's last device call, on a tree with bench/results/raw/2026-12-03e_split_projection_WITHDRAWN_
# UNMEASURED.patch applied (`git apply` it first; withdrawn from main until an A/B times it): build; whether this
# PyTorch has mm with float32 output for bf16; step rows mezo, agzo, zoact (3 rounds; SharedProjection reading bf16
# inputs through the split basis); then the GPU tests of the subspace, ZO-Act, AGZO and CUDA-backend files.
source bench/exp/device_run.sh
build_tree
python3 -c "import torch; from zokernels import ops
print('mm float32 output:', ops.mm_float32_output(torch.device('cuda')))"
timeout 200 python3 bench/bench_step.py --rows mezo,agzo,zoact --rounds 3 --out "$OUT/step_rows.json" \
  > "$OUT/step_rows.log" 2>&1; echo "step rc=$? ${SECONDS}s"; grep -E "^\||round" "$OUT/step_rows.log"
left=$((400 - SECONDS))
test_group subspace_backend $left tests/test_subspace.py tests/test_cuda_backend.py &
test_group zoact $left tests/test_zo_zoact.py &
test_group agzo $left tests/test_zo_agzo.py &
wait
echo "total ${SECONDS}s"
