# Device experiment: the CUDA tensor-core low-rank kernel with one or two basis buffers (ZK_TC_BASIS_BUFFERS: one
# or two barriers per tile), lowrank_combine_ K = 1 over OPT-1.3B's linears; then, on the default build: the
# low-rank and CUDA tests, memcheck and racecheck, and Triton against CUDA in one run with --save-auto.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader
for nb in 1 2; do
  rm -rf build zokernels/_C*.so  # the flag is not in ninja's command line: rebuild from scratch
  (time NVCC_APPEND_FLAGS="-DZK_TC_BASIS_BUFFERS=$nb" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py -q build_ext --inplace --force) > $OUT/aot_$nb.log 2>&1; tail -3 $OUT/aot_$nb.log | head -1
  python3 bench/bench_lowrank.py --backend cuda --ks 1 --out $OUT/lowrank_cuda_buffers$nb.json 2>&1 | tail -9
done
python3 -m pytest -q tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py 2>&1 | tail -1
compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py -k cuda 2>&1 | tail -2 | tee $OUT/memcheck_lowrank.log
timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py \
  -k "cuda and across_row_blocks and bfloat16 and 24 and stochastic" 2>&1 | tail -2 | tee $OUT/racecheck_lowrank_tc.log
echo "racecheck exit: ${PIPESTATUS[0]}"
python3 bench/bench_lowrank.py --backend triton,cuda --ks 1,4 --save-auto --out $OUT/lowrank_both.json 2>&1 | tail -40
cp zokernels/backends/auto_choices.json $OUT/
