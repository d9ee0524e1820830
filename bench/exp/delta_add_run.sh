#!/usr/bin/env bash
# One call for the CUDA delta-add kernel and what uses it: build; its GPU tests (parity of every backend, the
# bindings' checks, AGZO / subspace / ZO-Act / quantized-base tests) and memcheck on its parity tests; the
# delta-add benchmark with --save-auto (auto_choices.json comes back); then the step rows STEP_ROWS (default
# mezo,agzo,agzo-eager,zoact) on the new choices. At most 8 files come back.
source bench/exp/device_run.sh
build_tree
timeout 200 python3 -m pytest -q -x tests/test_lowrank.py tests/test_cuda_backend.py tests/test_subspace.py \
  tests/test_zo_agzo.py tests/test_zo_zoact.py tests/test_quant.py -k "delta or bindings_own or registered or not \
lowrank and not cuda_backend" > "$OUT/pytest.log" 2>&1; echo "tests rc=$? ${SECONDS}s: $(tail -1 "$OUT/pytest.log")"
timeout 120 compute-sanitizer --tool memcheck python3 -m pytest -q tests/test_lowrank.py -k "delta and cuda" 2>&1 \
  | tail -3 | tee "$OUT/memcheck.log"; echo "memcheck ${SECONDS}s"
timeout 150 python3 bench/bench_delta_add.py --save-auto --out "$OUT/delta_add.json" > "$OUT/delta_add.log" 2>&1
echo "delta_add rc=$? ${SECONDS}s"; grep -E "^\||auto choices|roofline" "$OUT/delta_add.log"
cp zokernels/backends/auto_choices.json "$OUT/"
timeout $((585 - SECONDS)) python3 bench/bench_step.py --rows ${STEP_ROWS:-mezo,agzo,agzo-eager,zoact} --rounds 3 \
  --out "$OUT/step.json" > "$OUT/step.log" 2>&1; echo "step rc=$? ${SECONDS}s"; grep -E "^\|" "$OUT/step.log"
echo "total ${SECONDS}s"
