#!/usr/bin/env bash
# Twenty-fourth session, fifth device call: the 32 x 256 prepared-fragment kernel's main loop. p32c as the third
# call; p32e (+ the warp's A fragments held in registers, not read from shared memory per tile); p32d (p32e's tree
# with ZK_TC_PREPARED_ROWS=128: a program takes 128 rows and walks them as four 32-row slices, M formed once, so the
# per-program start (table, finiteness, M, barriers) is paid once per 128 rows). Trees under _old/ (carry _old).
# bench_lowrank r = 32 on base (this tree) and each; the CUDA low-rank tests on p32d.
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
