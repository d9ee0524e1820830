#!/usr/bin/env bash
# The tables of a new device kind in one call: build, the low-rank benchmark of both backends (K = 1 and 4) with
# --save-auto, the step table (every row, agzo-eager included), then the elementwise benchmark with --save-auto
# where time is left. At most 8 files come back: env, the JSONs, auto_choices.json and two logs.
source bench/exp/device_run.sh
build "$ROOT" "" main
ls zokernels/_C*.so > /dev/null 2>&1 || { tail -30 "$OUT/build_main.log"; exit 1; }
rm -f "$OUT/build_main.log"
timeout 240 python3 bench/bench_lowrank.py --backend triton,cuda --save-auto --out "$OUT/lowrank_triton_vs_cuda.json" \
  > "$OUT/lowrank.log" 2>&1; echo "lowrank rc=$? ${SECONDS}s"; grep -E "one call|per layer|auto choices" "$OUT/lowrank.log" | tail -40
timeout $((560 - SECONDS)) python3 bench/bench_step.py --rows eager,mezo,bszo,agzo,agzo-eager,zoact \
  --out "$OUT/step.json" > "$OUT/step.log" 2>&1; echo "step rc=$? ${SECONDS}s"; grep -E "^\|" "$OUT/step.log"
if (( SECONDS < 420 )); then
  timeout $((580 - SECONDS)) python3 bench/bench_perturb.py --save-auto --out "$OUT/perturb.json" 2>&1 | tail -30
  echo "perturb rc=$? ${SECONDS}s"
fi
cp zokernels/backends/auto_choices.json "$OUT/"
echo "total ${SECONDS}s"
