#!/usr/bin/env bash
# ncu of one CUDA combine_ launch (K = 16 Gaussian, round-to-nearest, 2**26 bf16 elements): issue, pipes (the MUFU
# "xu" pipe included), stall reasons, clock. Text report in $OUT/ncu_combine_k16.txt.
source bench/exp/device_run.sh
build "$ROOT" "" main
timeout 300 ncu --clock-control none --kernel-name regex:combine_kernel --launch-skip 2 --launch-count 1 \
  --section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats --section WarpStateStats \
  --section InstructionStats --section Occupancy --section LaunchStats \
  --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fmaheavy_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__cycles_elapsed.avg.per_second \
  python3 bench/ncu_target.py combine nearest cuda > "$OUT/ncu_combine_k16.txt" 2>&1
grep -v "^==PROF==" "$OUT/ncu_combine_k16.txt" | grep -E "Duration|Issue Slots|Eligible|Active Warps|xu|fma|alu|inst_executed|per_second|Stall|Registers|Achieved Occupancy|SM Frequency" | head -40
echo "total ${SECONDS}s"
