#!/usr/bin/env bash
# Ninth session, second device call: the cp.async weight stages with the L1-caching .ca copy (the .cg copy of
# the first call fetched each 32-byte sector twice from L2: a lane's two 16-byte chunks of a row are one sector),
# STAGES = 2, 3, 4 built in parallel, tests of STAGES = 3, bench_lowrank (cuda, K = 1) of each; then the ABI probe.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for v in s2 s4; do mkdir -p /tmp/$v && cp -r csrc zokernels setup.py bench tests /tmp/$v/; done
build() {  # dir, extra nvcc flags, name
  (cd "$1" && rm -rf build zokernels/_C*.so && NVCC_APPEND_FLAGS="$2" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=4 \
     python3 setup.py build_ext --inplace > "$OUT/build_$3.log" 2>&1; echo "build $3 rc=$?")
}
SECONDS=0
build "$ROOT" "" s3 & build /tmp/s2 "-DZK_TC_WEIGHT_STAGES=2" s2 & build /tmp/s4 "-DZK_TC_WEIGHT_STAGES=4" s4 &
PROBE_DIR=/tmp/abi_probe timeout 200 python3 bench/exp/abi_probe.py > "$OUT/abi_probe.log" 2>&1 &
wait
echo "builds: ${SECONDS}s"
cat "$OUT/abi_probe.log" | grep -v Warning | tail -30
export PYTHONPATH=$ROOT
timeout 150 python3 -m pytest -q -x tests/test_lowrank.py -k "cuda" 2>&1 | tail -2
for v in s3 s2 s4; do
  dir=/tmp/$v; [[ $v == s3 ]] && dir=$ROOT
  echo "== bench $v"
  (cd $dir && PYTHONPATH=$dir timeout 100 python3 bench/bench_lowrank.py --backend cuda --ks 1 --out "$OUT/lowrank_$v.json" 2>&1 \
     | tee "$OUT/bench_$v.log" | grep -E "one call" | head -12)
done
