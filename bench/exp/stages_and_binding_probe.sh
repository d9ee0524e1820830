#!/usr/bin/env bash
# Ninth session, one device call: (1) the binding crash probe (ABI of torch and of the build, the symbol the
# formatted TORCH_CHECK calls, each case of binding_checks.py, a gdb backtrace where gdb exists); (2) the
# cp.async weight stages of the tensor-core low-rank kernel: builds of STAGES = 3 (this tree), 2 and 4, and of
# the register-prefetch kernel before it (exp_base_zo_lowrank.cu, untracked) in parallel; tests of the new
# kernel; bench_lowrank (cuda, K = 1) of each build in turn.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cxx11 abi', torch._C._GLIBCXX_USE_CXX11_ABI, torch.compiled_with_cxx11_abi())"
for v in s2 s4 base; do mkdir -p /tmp/$v && cp -r csrc zokernels setup.py bench tests /tmp/$v/; done
cp exp_base_zo_lowrank.cu /tmp/base/csrc/zo_lowrank.cu
build() {  # dir, extra nvcc flags, name
  (cd "$1" && rm -rf build zokernels/_C*.so && NVCC_APPEND_FLAGS="$2" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=4 \
     python3 setup.py build_ext --inplace > "$OUT/build_$3.log" 2>&1; echo "build $3 rc=$?")
}
SECONDS=0
build "$ROOT" "" main & build /tmp/s2 "-DZK_TC_WEIGHT_STAGES=2" s2 & build /tmp/s4 "-DZK_TC_WEIGHT_STAGES=4" s4 &
build /tmp/base "" base & wait
echo "builds: ${SECONDS}s"
export PYTHONPATH=$ROOT
echo "== ABI flags in the build:"; grep -o "_GLIBCXX_USE_CXX11_ABI=[01]" "$OUT/build_main.log" | sort | uniq -c
grep -m1 "bindings.cpp" "$OUT/build_main.log" | cut -c1-600
echo "== check-fail symbols:"; nm -DC zokernels/_C*.so | grep -i "checkfail\|torchCheck" | head
for c in ok k0 fp32 rank65 int_dtype combine129 rank129; do
  timeout 60 python3 bench/exp/binding_checks.py $c 2>&1 | tail -2; echo "  $c rc=${PIPESTATUS[0]}"
done
if command -v gdb > /dev/null; then
  timeout 90 gdb -batch -ex run -ex bt --args python3 bench/exp/binding_checks.py fp32 2>&1 | grep -v "^\[" | tail -25
else echo "no gdb"; fi
SECONDS=0
timeout 200 python3 -m pytest -q -x tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py 2>&1 \
  | tee "$OUT/pytest_main.log" | tail -4
for v in s2 s4; do
  (cd /tmp/$v && PYTHONPATH=/tmp/$v timeout 100 python3 -m pytest -q -x tests/test_lowrank.py -k "cuda and (parity or many_column or list)" 2>&1 | tail -2)
done
echo "tests: ${SECONDS}s"
for v in base main s2 s4; do
  dir=/tmp/$v; [[ $v == main ]] && dir=$ROOT
  echo "== bench $v"
  (cd $dir && PYTHONPATH=$dir timeout 100 python3 bench/bench_lowrank.py --backend cuda --ks 1 --out "$OUT/lowrank_$v.json" 2>&1 \
     | tee "$OUT/bench_$v.log" | grep -E "one call|roofline" | head -12)
done
