#!/usr/bin/env bash
# The split projection (SharedProjection's 16-bit GEMM with the split basis) against float32 projections in one
# bench_step process: rows agzo-split, agzo (float32: AGZO's default since the twenty-second session), zoact,
# zoact-f32 interleaved in every round (ROUNDS, default 6), so both
# paths see the same host (in reverse order every second round); the per-round ratios of each pair are printed last.
source bench/exp/device_run.sh
build_tree
timeout $((590 - SECONDS)) python3 bench/bench_step.py --rows agzo-split,agzo,zoact,zoact-f32 --rounds ${ROUNDS:-6} \
  --alternate --out "$OUT/step_split_ab.json" > "$OUT/step_split_ab.log" 2>&1
echo "step rc=$?"; grep -E "round|\|" "$OUT/step_split_ab.log" | tail -12
python3 bench/exp/step_ratios.py "$OUT/step_split_ab.json"
echo "total ${SECONDS}s"
