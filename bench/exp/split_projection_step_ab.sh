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
python3 - "$OUT/step_split_ab.json" <<'PY'
import json, sys
rows = {r["name"]: r["rounds"] for r in json.load(open(sys.argv[1]))["rows"]}
names = list(rows)
for split, f32 in [(names[1], names[2]), (names[3], names[4])]:
    print(split, "/ float32 projections per round:", " ".join("%.3f" % (a / b) for a, b in zip(rows[split], rows[f32])))
PY
echo "total ${SECONDS}s"
