#!/usr/bin/env bash
# A/B of the 16-bit stochastic-rounding contract (one Philox call per 8 elements) against the 32-bit one (per 4):
# the tree as committed before the change is shipped in _old/ (git archive, not committed). Both trees built at
# once; the low-rank benchmark (K = 1, both backends) and the Gaussian probe (both backends) on each, new first.
source bench/exp/device_run.sh
build "$ROOT/_old" "" old 8 &
build "$ROOT" "" new 8 &
wait
for tree in new old; do
  dir=$ROOT; [[ $tree == old ]] && dir=$ROOT/_old
  bench_lowrank "$dir" "$tree" --ks 1 --backend triton,cuda
  echo "lowrank $tree done ${SECONDS}s"
done
for tree in new old; do
  dir=$ROOT; [[ $tree == old ]] && dir=$ROOT/_old
  for backend in cuda triton; do
    (( SECONDS < 520 )) && gaussian_probe "$dir" "${tree}_$backend" --backend "$backend"
  done
done
python3 bench/exp/gaussian_probe.py --table "$OUT/probe.jsonl"
echo "total ${SECONDS}s"
