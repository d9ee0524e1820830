#!/usr/bin/env bash
# Twenty-fourth session, first device call: product_walk_probe.py (bases shared and per weight; the cp.async
# 128 x 128 candidate), then the whole step table (every row, 5 rounds) after build_tree, kept only where the forward
# stays within 10.4-10.7 ms in every round (the quiet-host rule).
source bench/exp/device_run.sh
timeout 240 python3 bench/exp/product_walk_probe.py "$OUT/product_walk.json" 2>&1 | tee "$OUT/product_walk.log" \
  | grep -E "product walk|roofline|Error|error" | head -80
echo "probe done ${SECONDS}s"
build_tree
timeout $((570 - SECONDS)) python3 bench/bench_step.py --out "$OUT/step.json" > "$OUT/step.log" 2>&1
echo "step rc=$?"; grep -E "\|" "$OUT/step.log" | tail -14
python3 bench/exp/step_ratios.py "$OUT/step.json" | head -1
echo "total ${SECONDS}s"
