#!/usr/bin/env bash
# Twenty-second session, first call: the GPU tests that have not run on the committed kernel / projection, the
# projections' device and host times, the split projection's step A/B (ROUNDS, alternating order), then ncu pipe
# utilisation of the tensor-core low-rank kernel at r = 64 (which pipe, if any, the kernel saturates). Ran on
# f5e5f96, when AGZO's default was the split path and agzo-f32 its float32 row (now agzo and agzo-split).
source bench/exp/device_run.sh
build_tree
test_group lowrank_subspace 150 tests/test_lowrank.py -k many_row_blocks tests/test_subspace.py
timeout 120 python3 bench/exp/projection_probe.py "$OUT/projection_probe.json" > "$OUT/projection_probe.log" 2>&1
echo "probe rc=$?"; tail -12 "$OUT/projection_probe.log"
timeout $((470 - SECONDS)) python3 bench/bench_step.py --rows agzo,agzo-f32,zoact,zoact-f32 --rounds ${ROUNDS:-6} \
  --alternate --out "$OUT/step_split_ab.json" > "$OUT/step_split_ab.log" 2>&1
echo "step rc=$? ${SECONDS}s"; grep -E "round|\|" "$OUT/step_split_ab.log" | tail -14
python3 bench/exp/step_ratios.py "$OUT/step_split_ab.json"
for c in 64:nearest 64:stochastic; do
  IFS=: read -r rank rounding <<< "$c"
  (( SECONDS > 560 )) && break
  timeout $((585 - SECONDS)) ncu --clock-control none --section ComputeWorkloadAnalysis --section WarpStateStats \
    --section SchedulerStats --kernel-name regex:lowrank_tc_kernel --launch-skip 2 --launch-count 1 --page raw \
    python3 bench/ncu_target.py lowrank $rank $rounding cuda > /tmp/ncu_$rank$rounding.txt 2>&1
  echo "=== r$rank $rounding rc=$?"; grep -E "pipe|issue_active|inst_executed.avg|warps_active|gpu__time_duration" /tmp/ncu_$rank$rounding.txt \
    | grep -E "pct|per_cycle|duration" | tee -a "$OUT/ncu_pipes.txt" | head -40
done
echo "total ${SECONDS}s"
