# Device experiment: the CUDA tensor-core low-rank kernel with and without the next tile's W loaded ahead
# (ZK_TC_PREFETCH_W), lowrank_combine_ K = 1 over OPT-1.3B's linears; then the low-rank CUDA tests on the default.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader; git log --oneline -1 2>/dev/null
for pf in 1 0; do
  rm -rf build zokernels/_C*.so  # the flag is not in ninja's command line: rebuild from scratch
  (time NVCC_APPEND_FLAGS="-DZK_TC_PREFETCH_W=$pf" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py -q build_ext --inplace --force) > $OUT/aot_$pf.log 2>&1; tail -3 $OUT/aot_$pf.log | head -1
  python3 bench/bench_lowrank.py --backend cuda --ks 1 --out $OUT/lowrank_cuda_prefetch_w$pf.json 2>&1 | tail -11
done
# (the last build is the one without prefetch: tests run in the final run)
