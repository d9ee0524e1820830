#!/usr/bin/env bash
# A/B of this tree against the committed one, shipped in _old/ (`git archive HEAD csrc zokernels setup.py bench tests
# | tar -x -C _old`; git-ignored: pass it in the device tool's carry). First used for the 16-bit stochastic-rounding contract (one
# Philox call per 8 elements) against the 32-bit one. Both trees built at once; the low-rank benchmark (K = 1) and
# the Gaussian probe on each, new first. BACKENDS (default "triton cuda") picks the backends timed; TESTS=1 then
# runs this tree's CUDA parity and rounding tests.
source bench/exp/device_run.sh
BACKENDS=${BACKENDS:-triton cuda}
build "$ROOT/_old" "" old 8 &
build "$ROOT" "" new 8 &
wait
rm -f "$OUT"/build_*.log  # the tool returns at most 8 files
for tree in new old; do
  dir=$ROOT; [[ $tree == old ]] && dir=$ROOT/_old
  bench_lowrank "$dir" "$tree" --ks 1 --backend "${BACKENDS// /,}"
  echo "lowrank $tree done ${SECONDS}s"
done
for tree in new old; do
  dir=$ROOT; [[ $tree == old ]] && dir=$ROOT/_old
  for backend in $BACKENDS; do
    (( SECONDS < 420 )) && gaussian_probe "$dir" "${tree}_$backend" --backend "$backend"
  done
done
python3 bench/exp/gaussian_probe.py --table "$OUT/probe.jsonl"
if [[ "${TESTS:-0}" == 1 ]]; then
  timeout $((580 - SECONDS)) python3 -m pytest -q -x tests/test_ops.py tests/test_lowrank.py tests/test_contract.py \
    tests/test_cuda_backend.py -k cuda > "$OUT/pytest_cuda.log" 2>&1; echo "tests rc=$?: $(tail -1 "$OUT/pytest_cuda.log")"
fi
echo "total ${SECONDS}s"
