#!/usr/bin/env bash
# Twenty-fourth session, seventh device call: the interior-walk test (its first name lacked "cuda", so the sixth
# call's -k cuda left it out), then memcheck of it.
source bench/exp/device_run.sh
build_tree
test_group prepared 60 tests/test_lowrank.py -k "cuda and prepared_rank"
cat "$OUT/pytest_prepared.log" | tail -5
timeout $((140 - SECONDS)) compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x \
  tests/test_lowrank.py -k "cuda and prepared_rank" 2>&1 | tail -3 | tee "$OUT/memcheck_interior.log"
echo "memcheck exit ${PIPESTATUS[0]}"; echo "total ${SECONDS}s"
