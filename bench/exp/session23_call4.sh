#!/usr/bin/env bash
# Twenty-third session, fourth device call. (1) Do the tile walks reproduce? The third call's CUDA walks of 64 x 128
# and 128 x 128 tiles took 1.31-1.34x the copy roofline where the twenty-second session's took 1.10-1.13x (128 x 64
# and 32 x 256 reproduced): the committed-then probe (fbe38cf, _probe_fbe38cf.py, shipped untracked) and this
# tree's, alternating, twice each, then the Triton walks once. (2) This tree's build and the step table.
source bench/exp/device_run.sh
for round in 1 2; do
  python3 bench/exp/_probe_fbe38cf.py "$OUT/walk_fbe38cf_$round.json" 2>&1 | grep columns | sed "s/^/fbe38cf $round /"
  python3 bench/exp/traversal_probe_cuda.py "$OUT/walk_stride_$round.json" 2>&1 | grep columns | sed "s/^/stride  $round /"
done
python3 bench/exp/traversal_probe.py "$OUT/walk_triton.json" 2>&1 | grep -E "columns|flat" | sed "s/^/triton /"
echo "walks done ${SECONDS}s"
build_tree
timeout $((590 - SECONDS)) python3 bench/bench_step.py --rounds 3 --out "$OUT/step.json" > "$OUT/step.log" 2>&1
echo "step rc=$?"; grep -E "round|\|" "$OUT/step.log" | tail -16
echo "total ${SECONDS}s"
