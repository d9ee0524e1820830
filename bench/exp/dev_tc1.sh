# Device experiment: the CUDA tensor-core low-rank kernel with and without the next tile's W loaded ahead
# (ZK_TC_PREFETCH_W), lowrank_combine_ over OPT-1.3B's linears; Triton in the same run; then, on the default
# build, the low-rank CUDA tests, compute-sanitizer memcheck on them and racecheck on one tensor-core case.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader
for pf in 0 1; do
  rm -rf build zokernels/_C*.so  # the flag is not in ninja's command line: rebuild from scratch
  (time NVCC_APPEND_FLAGS="-DZK_TC_PREFETCH_W=$pf" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py -q build_ext --inplace --force) > $OUT/aot_$pf.log 2>&1; tail -3 $OUT/aot_$pf.log | head -1
  python3 bench/bench_lowrank.py --backend cuda --ks $([[ $pf == 1 ]] && echo 1,4 || echo 1) --out $OUT/lowrank_cuda_prefetch_w$pf.json 2>&1 | tail -19
done
python3 bench/bench_lowrank.py --backend triton --ks 1 --out $OUT/lowrank_triton.json 2>&1 | tail -11
python3 -m pytest -q tests/test_lowrank.py tests/test_cuda_backend.py -k cuda 2>&1 | tail -2
compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py -k cuda 2>&1 | tail -3 | tee $OUT/memcheck_lowrank.log
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x tests/test_lowrank.py \
  -k "cuda and across_row_blocks and bfloat16 and 24 and stochastic" 2>&1 | tail -3 | tee $OUT/racecheck_lowrank_tc.log
echo "racecheck exit: ${PIPESTATUS[0]}"
