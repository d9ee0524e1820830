#!/usr/bin/env bash
# The whole test suite on the GPU in three pytest processes at once (Triton compiles on the CPU cores), after an
# ahead-of-time build; one log per group and the summary lines. Keeps a device call under its 600 s limit.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/env.txt"
SECONDS=0
rm -rf build zokernels/_C*.so; ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; echo "build rc=$? ${SECONDS}s"
group() {  # name, test files
  local name=$1; shift
  timeout 480 python3 -m pytest -q -rs "$@" > "$OUT/pytest_$name.log" 2>&1; echo "$name rc=$?: $(tail -1 "$OUT/pytest_$name.log")"
}
group kernels tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py tests/test_contract.py &
group ops tests/test_ops.py tests/test_subspace.py tests/test_examples.py tests/test_optim.py &
group steps tests/test_zo_agzo.py tests/test_zo_bszo.py tests/test_zo_mezo.py tests/test_zo_perturbation.py tests/test_zo_zoact.py &
wait
echo "suite ${SECONDS}s"
