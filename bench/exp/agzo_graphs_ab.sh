#!/usr/bin/env bash
# AGZO's range finder by CUDA-graph replays against op-by-op launches, in one device call: the extension built,
# the GPU tests of the subspace and AGZO files, then bench_step rows mezo, agzo and agzo-eager (interleaved
# rounds, ROUNDS, default 5) and a count of the host's aten calls per AGZO step both ways.
source bench/exp/device_run.sh
(rm -rf build zokernels/_C*.so && ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace \
   > "$OUT/build.log" 2>&1; echo "build rc=$? ${SECONDS}s")
timeout 200 python3 -m pytest -q tests/test_subspace.py tests/test_zo_agzo.py > "$OUT/pytest_agzo.log" 2>&1
echo "tests rc=$?: $(tail -1 "$OUT/pytest_agzo.log")"
timeout 300 python3 bench/bench_step.py --rows mezo,agzo,agzo-eager --rounds ${ROUNDS:-5} --out "$OUT/step_agzo_graphs.json" \
  2>&1 | grep -E "^\|" | tee "$OUT/step_agzo_graphs.log"
echo "total ${SECONDS}s"
