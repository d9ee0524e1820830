set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader
(time ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py -q build_ext --inplace) > $OUT/aot.log 2>&1; tail -3 $OUT/aot.log
python3 -m pytest -q -x tests/test_lowrank.py tests/test_cuda_backend.py 2>&1 | tee $OUT/pytest_lowrank.log | tail -5
python3 bench/bench_lowrank.py --backend cuda --ks 1,4 --out $OUT/lowrank_cuda_tc.json 2>&1 | tee $OUT/lowrank_cuda.log | tail -22
python3 bench/bench_lowrank.py --backend triton --ks 1 --out $OUT/lowrank_triton.json 2>&1 | tee $OUT/lowrank_triton.log | tail -12
