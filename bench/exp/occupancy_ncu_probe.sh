#!/usr/bin/env bash
# Ninth session, sixth device call: why the CUDA tensor-core low-rank kernel's stochastic rounding sits at 1.42x
# roofline. ncu (speed of light, occupancy, warp states, scheduler) of one r = 8 launch, nearest and stochastic,
# for this tree and for a build with 3 blocks per SM at r <= 16 (-DZK_TC_SMALL_RANK_BLOCKS_PER_SM=3: 80
# registers, ptxas spills 48-164 bytes); bench_lowrank (cuda, K = 1, r 8 and 16) of both.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mkdir -p /tmp/b3 && cp -r csrc zokernels setup.py bench tests /tmp/b3/
build() {  # dir, extra nvcc flags, name
  (cd "$1" && rm -rf build zokernels/_C*.so && NVCC_APPEND_FLAGS="$2" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=8 \
     python3 setup.py build_ext --inplace > "$OUT/build_$3.log" 2>&1; echo "build $3 rc=$?")
}
SECONDS=0
build "$ROOT" "" b2 & build /tmp/b3 "-DZK_TC_SMALL_RANK_BLOCKS_PER_SM=3" b3 & wait
echo "builds: ${SECONDS}s"
profile() {  # dir, name, rounding
  (cd "$1" && PYTHONPATH=$1 timeout 120 ncu --clock-control none --kernel-name regex:lowrank_tc_kernel --launch-skip 2 \
     --launch-count 1 --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
     --section LaunchStats python3 bench/ncu_target.py lowrank 8 "$3" cuda > "$OUT/ncu_$2_$3.txt" 2>&1)
  echo "== ncu $2 $3"
  grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Block Limit Registers|Block Limit Shared" "$OUT/ncu_$2_$3.txt" | head -16
}
profile "$ROOT" b2 nearest
profile "$ROOT" b2 stochastic
profile /tmp/b3 b3 stochastic
for v in b2 b3; do
  dir=/tmp/$v; [[ $v == b2 ]] && dir=$ROOT
  echo "== bench $v"
  (cd $dir && PYTHONPATH=$dir timeout 100 python3 bench/bench_lowrank.py --backend cuda --ks 1 --ranks 8,16 --out "$OUT/lowrank_$v.json" 2>&1 \
     | tee "$OUT/bench_$v.log" | grep -E "one call" | head -6)
done
echo "total ${SECONDS}s"
