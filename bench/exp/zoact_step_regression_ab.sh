#!/usr/bin/env bash
# ZO-Act's step on the same GPU and host from two trees: fcdfb38 (the H200 step table's tree, 46.3 ms there) in
# _old/ (carried: `rm -rf _old && mkdir _old && git archive fcdfb38 csrc zokernels setup.py bench tests | tar -x -C
# _old`) against this tree, rows mezo and zoact, 3 rounds per process, processes alternating old/new/old/new.
# The twenty-eighth session's full table put ZO-Act at 64.8 ms (3.01x its two forwards' time) on an H100, against 57.2 ms in the
# H100's table of f738349 (forward 12.1 ms then, 10.75 now).
source bench/exp/device_run.sh
build "$ROOT/_old" "" old 8 & build "$ROOT" "" main 8; wait
for pass in 1 2; do
  for tree in old new; do
    dir=$ROOT; [[ $tree == old ]] && dir=$ROOT/_old
    (cd "$dir" && PYTHONPATH=$dir timeout 150 python3 bench/bench_step.py --rows mezo,zoact --rounds 3 \
      --out "$OUT/step_${tree}_$pass.json" > "$OUT/step_${tree}_$pass.log" 2>&1)
    echo "$tree pass $pass rc=$?: $(grep -E '^\| (forward|zokernels)' "$OUT/step_${tree}_$pass.log" | cut -d'|' -f2-4 | tr '\n' ';') ${SECONDS}s"
  done
done
rm -f "$OUT"/build_*.log
echo "total ${SECONDS}s"
