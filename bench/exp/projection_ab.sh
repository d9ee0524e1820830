#!/usr/bin/env bash
# Twentieth session: the split projection (bench/results/raw/2026-12-03e_split_projection_WITHDRAWN_UNMEASURED.patch,
# applied to this tree) against the committed tree shipped in _old/ (`git archive HEAD csrc zokernels setup.py bench
# tests | tar -x -C _old`; carry it). Both built at once; then ROUNDS rounds, each one bench_step process per tree
# (rows mezo, agzo, zoact; the order of the trees alternates), so that the host's drift falls on both; a table of
# every round and the medians. TESTS=1 then runs this tree's subspace, ZO-Act and AGZO tests while time is left.
source bench/exp/device_run.sh
build "$ROOT/_old" "" old 8 &
build "$ROOT" "" new 8 &
wait
rm -f "$OUT"/build_*.log
ls "$ROOT"/zokernels/_C*.so "$ROOT"/_old/zokernels/_C*.so > /dev/null || exit 1
python3 -c "import torch; from zokernels import ops
print('mm float32 output:', ops.mm_float32_output(torch.device('cuda')))"
for round in $(seq 1 ${ROUNDS:-3}); do
  trees="new old"; (( round % 2 == 0 )) && trees="old new"
  for tree in $trees; do
    dir=$ROOT; [[ $tree == old ]] && dir=$ROOT/_old
    (cd "$dir" && PYTHONPATH=$dir timeout 150 python3 bench/bench_step.py --rows mezo,agzo,zoact --rounds 1 \
       --rep-ms ${REP_MS:-400} --out "$OUT/step_${tree}_$round.json" > "/tmp/step_${tree}_$round.log" 2>&1)
    echo "round $round $tree rc=$? ${SECONDS}s"
  done
done
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
ms = {}
for path in sorted(glob.glob(f"{out}/step_*_*.json")):
    tree = path.rsplit("/", 1)[1].split("_")[1]
    for row in json.load(open(path))["rows"]:
        ms.setdefault((row["name"], tree), []).append(row["ms"])
print("row | new (split projection): rounds -> median | old: rounds -> median | new / old")
for name in dict.fromkeys(n for n, _ in ms):
    new, old = ms.get((name, "new"), []), ms.get((name, "old"), [])
    if new and old:
        print(name, "|", " ".join("%.2f" % x for x in new), "->", "%.2f" % statistics.median(new), "|",
              " ".join("%.2f" % x for x in old), "->", "%.2f" % statistics.median(old), "|",
              "%.3f" % (statistics.median(new) / statistics.median(old)))
PY
if [[ "${TESTS:-0}" == 1 ]] && (( SECONDS < 430 )); then
  left=$((560 - SECONDS))
  test_group subspace $left tests/test_subspace.py &
  test_group zoact $left tests/test_zo_zoact.py &
  test_group agzo $left tests/test_zo_agzo.py &
  wait
fi
echo "total ${SECONDS}s"
