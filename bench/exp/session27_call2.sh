#!/usr/bin/env bash
# Twenty-seventh session, second device call: the whole test suite on the GPU (results/pytest_<device>.log), then
# the step table (bench_step.py, 3 rounds) in the time left; the forward row across rounds says whether the host
# was quiet.
source bench/exp/device_run.sh
build_tree
test_group all 360 tests/
timeout $((585 - SECONDS)) python3 bench/bench_step.py --rounds 3 --out "$OUT/step.json" 2>&1 | tee "$OUT/step.log" | tail -14
echo "total ${SECONDS}s"
