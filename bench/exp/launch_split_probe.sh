#!/usr/bin/env bash
# One launch for OPT-1.3B's 388 parameters (512 tensors a launch) against four (128, the limit before), on one
# build: Gaussian perturb_/combine_ through bench/exp/gaussian_probe.py with and without --max-tensors 128 in two
# alternating passes; the CUDA tests; then the CUDA low-rank benchmark (144 linears: one launch where there were
# two) against a copy of the tree held at 128 tensors a launch. (Its first run, 2026-11-24, also built the K = 1
# Gaussian kernel at 6 blocks per SM: the same times as 5.)
source bench/exp/device_run.sh
build "$ROOT" "" main
for pass in 1 2; do gaussian_probe "$ROOT" launch512; gaussian_probe "$ROOT" launch128 --max-tensors 128; done
python3 bench/exp/gaussian_probe.py --table "$OUT/probe.jsonl"
timeout 200 python3 -m pytest -q -x tests/test_cuda_backend.py 2>&1 | tail -2
copy_tree /tmp/l128  # with main's extension; max_tensors_per_launch() held at 128
sed -i 's/    return _state\["max_tensors"\] if _state\["loaded"\] else None/    return 128 if _state["loaded"] else None/' \
  /tmp/l128/zokernels/backends/cuda_backend.py
grep -c 'return 128 if' /tmp/l128/zokernels/backends/cuda_backend.py | sed 's/^/128-limit edit applied: /'
bench_lowrank /tmp/l128 two_launches --backend cuda --ks 1
bench_lowrank "$ROOT" one_launch --backend cuda --ks 1
echo "total ${SECONDS}s"
