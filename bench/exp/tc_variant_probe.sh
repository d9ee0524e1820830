#!/usr/bin/env bash
# -D-flag variants of the tensor-core low-rank kernel (csrc/zo_lowrank.cu), each a copy of this tree built with its
# flags, all built at once; bench_lowrank CUDA (KS, default "1"; BENCH_ARGS more of its arguments, e.g. "--ranks
# 32,64") on each, a table of them all (device ms), then the CUDA tests of TEST_FILES (default: the low-rank and
# CUDA-backend tests) on TEST_VARIANT (default: the first; TESTS=0: none). VARIANTS="name:flags[:tree[:ranks]];..."
# (flags may be empty; tree: a directory under _old/ built instead of this tree, e.g. a variant's code shipped with
# the device tool's carry of _old, empty for this tree; ranks: that variant's --ranks, e.g. 8,16,64 where it changes
# those only). OLD=1 adds the committed tree as variant "old" (ship it as _old/ itself: `git archive HEAD csrc
# zokernels setup.py bench tests | tar -x -C _old`; _old/ is git-ignored, so pass it in carry).
# Flags in the tree: ZK_TC_WIDE_MAX_RANK, ZK_TC_HALF_MIN_RANK, ZK_TC_PREPARED_ROWS_R16 / _R32 / _R64 and their _SR
# forms for stochastic rounding (rows per block of the prepared-fragment kernel at that rank, 0: staged; before the
# twenty-sixth session ZK_TC_PREPARED_RANK). A -D macro that csrc/ does not read is refused.
# The withdrawn variants' flags and patches are in bench/NOTES.md and bench/results/raw/*_REJECTED*; their code is not in the tree.
source bench/exp/device_run.sh
VARIANTS=${VARIANTS:-"base:"}
names=(); declare -A ranks_of
IFS=';' read -ra specs <<< "$VARIANTS"
for spec in "${specs[@]}"; do
  IFS=: read -r name flags tree ranks <<< "$spec"; names+=("$name"); ranks_of[$name]=$ranks
  src=$ROOT/csrc; [[ -n "$tree" ]] && src=$ROOT/_old/$tree/csrc  # the sources this variant builds
  for macro in $(grep -o -- '-D[A-Z_0-9]*' <<< "$flags" | cut -c3-); do  # a macro the sources never read builds the
    # same kernel as base and would time as a variant: refuse it (e.g. ZK_TC_PREPARED_RANK, gone since session 26)
    grep -rqw "$macro" "$src" || { echo "variant $name: -D$macro is not read by $src"; exit 2; }
  done
  if [[ -n "$tree" ]]; then rm -rf /tmp/v_$name; cp -r "$ROOT/_old/$tree" /tmp/v_$name; else copy_tree /tmp/v_$name; fi
  build /tmp/v_$name "$flags" $name 4 &
done
[[ "${OLD:-0}" == 1 ]] && { names+=(old); rm -rf /tmp/v_old; cp -r "$ROOT/_old" /tmp/v_old; build /tmp/v_old "" old 4 & }
wait
grep -h "error" "$OUT"/build_*.log | head -5
rm -f "$OUT"/build_*.log  # the tool returns at most 8 files
for v in "${names[@]}"; do
  bench_lowrank /tmp/v_$v "$v" --ks ${KS:-1} --backend cuda ${BENCH_ARGS:-} ${ranks_of[$v]:+--ranks ${ranks_of[$v]}} \
    > /dev/null
  rm -f "$OUT/lowrank_$v.log"
  echo "lowrank $v done ${SECONDS}s"
done
python3 bench/exp/lowrank_table.py "$OUT" "${names[@]}"
if [[ "${TESTS:-1}" == 1 ]]; then
  t=/tmp/v_${TEST_VARIANT:-${names[0]}}
  (cd $t && PYTHONPATH=$t timeout $((590 - SECONDS)) python3 -m pytest -q -x ${TEST_FILES:-tests/test_lowrank.py \
    tests/test_cuda_backend.py} -k cuda > "$OUT/pytest_cuda.log" 2>&1); echo "tests rc=$?: $(tail -1 "$OUT/pytest_cuda.log")"
fi
echo "total ${SECONDS}s"
