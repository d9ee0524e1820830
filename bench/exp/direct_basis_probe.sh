#!/usr/bin/env bash
# Ninth session, seventh device call: B fragments loaded by each lane straight from the basis (no barrier in the
# tile loop) up to padded rank 8 (this tree), up to 16 (-DZK_TC_DIRECT_BASIS_MAX_RANK=16, ptxas spills 48 bytes
# at r 16 stochastic) and nowhere (=0: staged in shared memory, the control); the CUDA low-rank tests of each,
# bench_lowrank (cuda, K = 1) of each, ncu of this tree's r = 8 stochastic launch.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for v in d16 d0; do mkdir -p /tmp/$v && cp -r csrc zokernels setup.py bench tests /tmp/$v/; done
build() {  # dir, extra nvcc flags, name
  (cd "$1" && rm -rf build zokernels/_C*.so && NVCC_APPEND_FLAGS="$2" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=5 \
     python3 setup.py build_ext --inplace > "$OUT/build_$3.log" 2>&1; echo "build $3 rc=$?")
}
SECONDS=0
build "$ROOT" "" d8 & build /tmp/d16 "-DZK_TC_DIRECT_BASIS_MAX_RANK=16" d16 & build /tmp/d0 "-DZK_TC_DIRECT_BASIS_MAX_RANK=0" d0 & wait
echo "builds: ${SECONDS}s"
dir_of() { [[ $1 == d8 ]] && echo "$ROOT" || echo "/tmp/$1"; }
for v in d8 d16 d0; do
  d=$(dir_of $v)
  (cd $d && PYTHONPATH=$d timeout 120 python3 -m pytest -q -x tests/test_lowrank.py -k cuda 2>&1 | tail -1 | sed "s/^/tests $v: /")
done
for v in d8 d16 d0; do
  d=$(dir_of $v)
  echo "== bench $v"
  (cd $d && PYTHONPATH=$d timeout 120 python3 bench/bench_lowrank.py --backend cuda --ks 1 --out "$OUT/lowrank_$v.json" 2>&1 \
     | tee "$OUT/bench_$v.log" | grep -E "one call" | head -8)
done
PYTHONPATH=$ROOT timeout 120 ncu --clock-control none --kernel-name regex:lowrank_tc_kernel --launch-skip 2 --launch-count 1 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
  python3 bench/ncu_target.py lowrank 8 stochastic cuda > "$OUT/ncu_d8_stochastic.txt" 2>&1
grep -E "Duration|DRAM Throughput|No Eligible|Eligible Warps|Warp Cycles Per Issued|Registers Per|barrier" "$OUT/ncu_d8_stochastic.txt" | head -10
echo "total ${SECONDS}s"
