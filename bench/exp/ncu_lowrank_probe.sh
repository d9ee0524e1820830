#!/usr/bin/env bash
# Thirteenth session: where the low-rank kernels lose time against the copy roofline. A -lineinfo build of this
# tree, then ncu --set full of one lowrank_combine_ launch (bench/ncu_target.py: four OPT-1.3B layers, K = 1) per
# config in CONFIGS ("rank:rounding:backend ..."): the key metrics, and the SASS lines with the most stall samples
# (and their reasons) of each. STEPS=1 then runs the step table (bench/bench_step.py). FLAGS: nvcc -D flags.
source bench/exp/device_run.sh
CONFIGS=${CONFIGS:-"64:nearest:cuda 64:nearest:triton 32:stochastic:cuda 16:nearest:cuda"}
build "$ROOT" "${FLAGS:-}" ncu 16  # FLAGS: extra nvcc flags (-D variants); the build has -lineinfo
for c in $CONFIGS; do
  IFS=: read -r rank rounding backend <<< "$c"
  name=r${rank}_${rounding}_${backend}
  kernel=lowrank_tc_kernel; [[ $backend == triton ]] && kernel=_lowrank_kernel
  timeout 150 ncu --clock-control none --set full --import-source yes --kernel-name regex:$kernel --launch-skip 2 \
    --launch-count 1 -f -o /tmp/$name python3 bench/ncu_target.py lowrank $rank $rounding $backend > /tmp/$name.log 2>&1 \
    || { echo "ncu $name failed"; tail -5 /tmp/$name.log; continue; }
  ncu --import /tmp/$name.ncu-rep --page details > /tmp/${name}_details.txt 2>&1
  ncu --import /tmp/$name.ncu-rep --page source --csv --print-source sass > /tmp/${name}_sass.csv 2>&1
  {
    echo "=== $name (${SECONDS}s)"
    grep -E "^\s+(Duration|DRAM Throughput|Memory Throughput|L1/TEX Hit|L2 Hit|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Issued Ipc|No Eligible|Eligible Warps|Active Warps Per|Warp Cycles Per Issued|Dynamic Shared|Static Shared|L1/TEX Cache Throughput|L2 Cache Throughput|Executed Ipc A|Block Limit|Max Bandwidth|Mem Busy|Mem Pipes Busy)" /tmp/${name}_details.txt
    grep -E "Stall|stall" /tmp/${name}_details.txt | grep -iv "^\s*$" | head -12
    python3 bench/exp/ncu_source_top.py /tmp/${name}_sass.csv 30
  } | tee -a "$OUT/ncu_summary.txt"
done
cp /tmp/r64_nearest_cuda_details.txt "$OUT/" 2>/dev/null
if [[ "${STEPS:-1}" == 1 ]]; then
  timeout $((590 - SECONDS)) python3 bench/bench_step.py --out "$OUT/step.json" 2>&1 | tee "$OUT/step.log" | tail -14
fi
echo "total ${SECONDS}s"
