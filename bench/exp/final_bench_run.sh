#!/usr/bin/env bash
# After a change to the kernels or their launches: build this tree, the perturb_/combine_ benchmark and the low-rank
# benchmark of both backends, each with --save-auto (auto_choices.json and both JSON files come back in $OUT).
source bench/exp/device_run.sh
build "$ROOT" "" main
timeout 250 python3 -m zokernels bench --save-auto --out "$OUT/perturb.json" > "$OUT/perturb.log" 2>&1
grep -E "perturb_|combine_ .*K=16|auto choices" "$OUT/perturb.log"
bench_lowrank "$ROOT" triton_vs_cuda --backend triton,cuda --save-auto
cp zokernels/backends/auto_choices.json "$OUT/"
echo "total ${SECONDS}s"
