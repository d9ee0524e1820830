#!/usr/bin/env bash
# A/B of the AGZO step (bench_step rows mezo, agzo; 4 rounds) between this tree and an earlier one shipped as
# _old/ (git archive <commit> csrc zokernels setup.py bench tests | tar -x -C _old; pass "_old" in the carry), two
# alternating passes (the host drifts).
source bench/exp/device_run.sh
copy_tree /tmp/v_new; build /tmp/v_new "" new 8 &
rm -rf /tmp/v_old; cp -r "$ROOT/_old" /tmp/v_old; build /tmp/v_old "" old 8 &
wait
for pass in 1 2; do for v in old new; do
  (cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v timeout 120 python3 bench/bench_step.py --rows mezo,agzo --rounds 4 --out "$OUT/step_${v}_$pass.json" 2>&1 | grep -E "^\| (forward|zokernels MeZO \(inplace|zokernels AGZO)" | sed "s/^/$v $pass /")
done; done
echo "total ${SECONDS}s"
