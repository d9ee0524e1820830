#!/usr/bin/env bash
# Twenty-second session, last call: this tree's build, the GPU tests of the projections and the low-rank methods
# (AGZO's float32 default), r = 32 under two one-flag geometries of the tensor-core kernel against this tree's
# (w32: wide 64 x 128 blocks at r = 32; h32: the fp16 product from r = 32), then the whole step table.
source bench/exp/device_run.sh
declare -A FLAGS=([w32]="-DZK_TC_WIDE_MAX_RANK=32" [h32]="-DZK_TC_HALF_MIN_RANK=32")
for v in "${!FLAGS[@]}"; do copy_tree /tmp/v_$v; build /tmp/v_$v "${FLAGS[$v]}" $v 4 & done
build_tree
wait
rm -f "$OUT"/build_*.log
test_group methods 200 tests/test_subspace.py tests/test_zo_agzo.py tests/test_zo_zoact.py
for v in main w32 h32; do
  dir=/tmp/v_$v; [[ $v == main ]] && dir=$ROOT
  bench_lowrank $dir $v --ks 1 --backend cuda --ranks 32 > /dev/null; rm -f "$OUT/lowrank_$v.log"
done
python3 bench/exp/lowrank_table.py "$OUT" main w32 h32
timeout $((590 - SECONDS)) python3 bench/bench_step.py --rounds 3 --out "$OUT/step.json" > "$OUT/step.log" 2>&1
echo "step rc=$?"; grep -E "round|\|" "$OUT/step.log" | tail -16
echo "total ${SECONDS}s"
