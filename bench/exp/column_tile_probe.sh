#!/usr/bin/env bash
# Ninth session, eighth device call: the tensor-core low-rank kernel with 32-column tiles (half the accumulators
# and weight registers per lane; each lane's 8 columns of a row are one 16-byte chunk, and the 4 lanes of a row
# store 64 contiguous bytes) at 2 and 3 blocks per SM, against 64-column tiles at 2 (this tree). Builds in
# parallel (-DZK_TC_COLS, -DZK_TC_MIN_BLOCKS; the copies' cuda_backend geometry edited to match), the CUDA
# low-rank tests and bench_lowrank (cuda, K = 1) of each.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for v in c32b2 c32b3; do
  mkdir -p /tmp/$v && cp -r csrc zokernels setup.py bench tests /tmp/$v/
  sed -i 's/"tensor_core": (128, 64)/"tensor_core": (128, 32)/' /tmp/$v/zokernels/backends/cuda_backend.py
  grep -c '"tensor_core": (128, 32)' /tmp/$v/zokernels/backends/cuda_backend.py
done
build() {  # dir, extra nvcc flags, name
  (cd "$1" && rm -rf build zokernels/_C*.so && NVCC_APPEND_FLAGS="$2" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=5 \
     python3 setup.py build_ext --inplace > "$OUT/build_$3.log" 2>&1; echo "build $3 rc=$?")
}
SECONDS=0
build "$ROOT" "" c64b2 & build /tmp/c32b2 "-DZK_TC_COLS=32" c32b2 & build /tmp/c32b3 "-DZK_TC_COLS=32 -DZK_TC_MIN_BLOCKS=3" c32b3 & wait
echo "builds: ${SECONDS}s"
dir_of() { [[ $1 == c64b2 ]] && echo "$ROOT" || echo "/tmp/$1"; }
for v in c64b2 c32b2 c32b3; do
  d=$(dir_of $v)
  (cd $d && PYTHONPATH=$d timeout 120 python3 -m pytest -q -x tests/test_lowrank.py -k cuda 2>&1 | tail -1 | sed "s/^/tests $v: /")
done
for v in c64b2 c32b2 c32b3; do
  d=$(dir_of $v)
  echo "== bench $v"
  (cd $d && PYTHONPATH=$d timeout 120 python3 bench/bench_lowrank.py --backend cuda --ks 1 --out "$OUT/lowrank_$v.json" 2>&1 \
     | tee "$OUT/bench_$v.log" | grep -E "one call" | head -8)
done
echo "total ${SECONDS}s"
