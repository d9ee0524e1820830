#!/usr/bin/env bash
# Twenty-fourth session, fifth device call: the 32 x 256 prepared-fragment kernel's main loop without per-chunk
# checks. p32e as the fourth call; p32f (+ an interior walk: where the program's rows and tiles lie inside the
# weight and its rows are 16-byte aligned, a second copy of the loop without the bounds, alignment and piece checks:
# 195 SASS instructions per tile against 735 with the fallback paths; the probe's loop has 209). Trees under _old/
# (carry _old). bench_lowrank r = 32 on base (this tree) and each; the CUDA low-rank tests on p32f.
source bench/exp/device_run.sh
FLAGS="-DZK_TC_PREPARED_RANK=32 -lineinfo"
SPECS="p32e:p32e: p32f:p32f:"
names=()
for spec in $SPECS; do
  IFS=: read -r name dir extra <<< "$spec"; names+=("$name")
  rm -rf /tmp/v_$name; cp -r "$ROOT/_old/$dir" /tmp/v_$name; build /tmp/v_$name "$FLAGS $extra" $name 4 &
done
copy_tree /tmp/v_base; build /tmp/v_base "" base 4 &
wait
for v in base "${names[@]}"; do ls /tmp/v_$v/zokernels/_C*.so > /dev/null 2>&1 || { echo "no build $v"; tail -20 "$OUT/build_$v.log"; }; done
rm -f "$OUT"/build_*.log
for v in base "${names[@]}"; do
  bench_lowrank /tmp/v_$v "$v" --ks 1 --ranks 32 --backend cuda > /dev/null; rm -f "$OUT/lowrank_$v.log"
done
python3 bench/exp/lowrank_table.py "$OUT" base "${names[@]}"
(cd /tmp/v_p32f && PYTHONPATH=/tmp/v_p32f timeout 150 python3 -m pytest -q -x tests/test_lowrank.py -k cuda \
  > "$OUT/pytest_cuda_p32f.log" 2>&1); echo "tests p32f rc=$?: $(tail -1 "$OUT/pytest_cuda_p32f.log")"
echo "total ${SECONDS}s"
