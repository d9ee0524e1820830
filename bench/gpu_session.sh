#!/usr/bin/env bash
# One device call: versions, the test suite on the real GPU compiler, error check + sweep, the benchmark.
# Usage (device tool): [SWEEP=1] [AOT=0] [TESTS=0] [PERTURB=0] bash bench/gpu_session.sh [--ncu] [--sanitize] [--steps] [--lowrank] [--profile];
# writes logs and JSON under $OUT. TESTS=0 skips pytest; PERTURB=0 skips gpu_check and the perturb_ benchmark;
# LOWRANK_ARGS (e.g. --sweep) go to bench_lowrank.py.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/env.txt"
# build the CUDA extension ahead of time (setup.py, as a user's install does); AOT=0 leaves it to the JIT build
if [[ "${AOT:-1}" == 1 ]]; then
  (time ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py -q build_ext --inplace) > "$OUT/aot_build.log" 2>&1
  tail -3 "$OUT/aot_build.log"
fi
python3 -c "import torch; from zokernels.backends import cuda_backend as c; r = c.unavailable_reason(torch.device('cuda')); print('cuda backend:', r or 'ready', '|', c.extension_source())" 2>&1 | tail -30 | tee "$OUT/cuda_build.log"
[[ "${TESTS:-1}" == 1 ]] && python3 -m pytest -q -x tests 2>&1 | tee "$OUT/pytest.log" | tail -15
if [[ " $* " == *" --sanitize "* ]]; then
  # memcheck: the CUDA parity tests of the elementwise and low-rank ops; racecheck (RACECHECK=1; the low-rank
  # kernel stages V in shared memory) is far slower: one dtype and rank of the low-rank parity tests
  compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_ops.py tests/test_lowrank.py \
    -k "cuda and (combine_parity or perturb_parity or sharded or copy_parity or add_parity or list_of_weights)" 2>&1 | tail -4 | tee "$OUT/sanitizer_memcheck.log"
  if [[ "${RACECHECK:-0}" == 1 ]]; then
    timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py \
      -k "cuda and bfloat16 and combine_parity and 16" 2>&1 | tail -4 | tee "$OUT/sanitizer_racecheck.log"
    echo "racecheck exit: ${PIPESTATUS[0]}" | tee -a "$OUT/sanitizer_racecheck.log"  # the sanitizer's, not tee's
  fi
fi
[[ "${PERTURB:-1}" == 1 ]] && python3 bench/gpu_check.py ${SWEEP:+--sweep} --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log" | tail -30
if [[ " $* " == *" --ncu "* ]]; then  # stall reasons and pipe use of one combine_ K=16 launch
  ncu --clock-control none --kernel-name regex:_combine_kernel --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats --section WarpStateStats \
      --section InstructionStats python3 bench/ncu_target.py 2>&1 | tee "$OUT/ncu.txt" | grep -v "^==PROF==" | tail -80
fi
if [[ "${PERTURB:-1}" == 1 ]]; then
  python3 -m zokernels bench --save-auto --out "$OUT/perturb.json" 2>&1 | tee "$OUT/bench.log"
  cp zokernels/backends/auto_choices.json "$OUT/" 2>/dev/null || true
fi
if [[ " $* " == *" --steps "* ]]; then  # optimizer steps on OPT-1.3B (MeZO, BSZO, AGZO, ZO-Act)
  python3 bench/bench_step.py --out "$OUT/step.json" 2>&1 | tee "$OUT/step.log" | tail -14
fi
if [[ " $* " == *" --lowrank "* ]]; then  # lowrank_combine_ on OPT-1.3B's linears against eager and the roofline
  python3 bench/bench_lowrank.py ${LOWRANK_ARGS:-} --out "$OUT/lowrank.json" 2>&1 | tee "$OUT/lowrank.log" | tail -20
fi
if [[ " $* " == *" --profile "* ]]; then  # torch.profiler of AGZO / ZO-Act / exact MeZO steps
  python3 bench/profile_step.py 2>&1 | grep -v "^USDT\|^STAGE" > "$OUT/profile.txt"; grep "^===" "$OUT/profile.txt"
fi
