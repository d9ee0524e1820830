#!/usr/bin/env bash
# Ninth session, third device call: the tensor-core low-rank kernel with whole-sector stores (lanes t, t ^ 1 swap
# a 16-byte chunk) against half-sector stores (-DZK_TC_HALF_SECTOR_STORES), built in parallel; the low-rank,
# CUDA-backend and auto tests (the bindings' checks with numbers among them) and the binding probe on the first;
# bench_lowrank K = 1 of both (Triton as well in the first).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mkdir -p /tmp/half && cp -r csrc zokernels setup.py bench tests /tmp/half/
build() {  # dir, extra nvcc flags, name
  (cd "$1" && rm -rf build zokernels/_C*.so && NVCC_APPEND_FLAGS="$2" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=8 \
     python3 setup.py build_ext --inplace > "$OUT/build_$3.log" 2>&1; echo "build $3 rc=$?")
}
SECONDS=0
build "$ROOT" "" exchange & build /tmp/half "-DZK_TC_HALF_SECTOR_STORES" half & wait
echo "builds: ${SECONDS}s"
export PYTHONPATH=$ROOT
for c in ok k0 fp32 rank65 int_dtype combine129 rank129; do
  timeout 60 python3 bench/exp/binding_checks.py $c 2>&1 | tail -1; echo "  $c rc=${PIPESTATUS[0]}"
done | tee "$OUT/binding_checks.log"
SECONDS=0
timeout 240 python3 -m pytest -q -x tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py 2>&1 \
  | tee "$OUT/pytest.log" | tail -3
echo "tests: ${SECONDS}s"
(cd /tmp/half && PYTHONPATH=/tmp/half timeout 100 python3 -m pytest -q -x tests/test_lowrank.py -k "cuda" 2>&1 | tail -1)
for v in exchange half; do
  dir=/tmp/$v; [[ $v == exchange ]] && dir=$ROOT
  backends=cuda; [[ $v == exchange ]] && backends=triton,cuda
  echo "== bench $v"
  (cd $dir && PYTHONPATH=$dir timeout 150 python3 bench/bench_lowrank.py --backend $backends --ks 1 --out "$OUT/lowrank_$v.json" 2>&1 \
     | tee "$OUT/bench_$v.log" | grep -E "one call" | head -16)
done
