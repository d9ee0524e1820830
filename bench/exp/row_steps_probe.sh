#!/usr/bin/env bash
# Twentieth session: row steps of the tensor-core low-rank kernel (ZK_TC_ROW_STEPS of the withdrawn
# bench/results/raw/2026-12-03f_row_steps_REJECTED.patch: `git apply` it to use the flag). Variants as
# bench/exp/tc_variant_probe.sh (VARIANTS, OLD=1 with _old/ carried, KS, BENCH_ARGS; TESTS=0 there), then per
# variant in NCU_VARIANTS one ncu run of a lowrank_combine_ launch (bench/ncu_target.py, four OPT-1.3B layers, rank
# NCU_RANK, NCU_ROUNDING, NCU_LAYERS): time, executed instructions, issue activity and the warp stall reasons per issue.
TESTS=0 bash bench/exp/tc_variant_probe.sh
source bench/exp/device_run.sh
for v in ${NCU_VARIANTS:-}; do
  (cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v timeout 120 ncu --clock-control none --kernel-name regex:lowrank_tc_kernel \
     --launch-skip 2 --launch-count 1 --metrics "gpu__time_duration.sum,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__warps_active.avg.per_cycle_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
     python3 bench/ncu_target.py lowrank ${NCU_RANK:-64} ${NCU_ROUNDING:-stochastic} cuda ${NCU_LAYERS:-4} > /tmp/ncu_$v.txt 2>&1)
  echo "=== ncu $v (rc $?, ${SECONDS}s)"
  grep -E "gpu__time|inst_executed|issue_active|warps_active|stalled" /tmp/ncu_$v.txt | awk '{v=$NF; if ($NF+0 > 0.05 || $1 !~ /stalled/) print $1, $(NF-1), v}' \
    | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | tee -a "$OUT/ncu_summary.txt"
done
if [[ -n "${TEST_VARIANT:-}" ]]; then
  t=/tmp/v_$TEST_VARIANT
  (cd $t && PYTHONPATH=$t timeout $((590 - SECONDS)) python3 -m pytest -q -x tests/test_lowrank.py tests/test_cuda_backend.py \
    -k cuda > "$OUT/pytest_cuda.log" 2>&1); echo "tests rc=$?: $(tail -1 "$OUT/pytest_cuda.log")"
fi
echo "total ${SECONDS}s"
