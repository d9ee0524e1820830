#!/usr/bin/env bash
# Twenty-second session, third call: whole-product variants of the tensor-core kernel at 3 blocks per SM against
# the committed kernel (_old/, carried), the CUDA tests on TEST_VARIANT, then the split projection's step A/B
# (bench/exp/split_projection_step_ab.sh's rows) on TEST_VARIANT's tree (the steps do not reach the tall kernel).
set -o pipefail
OUT=${OUT:-/tmp/out}
OUT=$OUT OLD=1 TEST_VARIANT=${TEST_VARIANT:-w3e} BENCH_ARGS="--ranks 32,64" \
  VARIANTS=${VARIANTS:-"w3:-DZK_TC_CHUNKED=2 -DZK_TC_TALL_MIN_BLOCKS=3;w3e:-DZK_TC_CHUNKED=2 -DZK_TC_EARLY_BARRIER=1 -DZK_TC_TALL_MIN_BLOCKS=3"} \
  bash bench/exp/tc_variant_probe.sh
t=/tmp/v_${TEST_VARIANT:-w3e}
cd $t && unset TRITON_INTERPRET && PYTHONPATH=$t timeout $((590 - ${PROBE_S:-300})) python3 bench/bench_step.py \
  --rows agzo-split,agzo,zoact,zoact-f32 --rounds ${ROUNDS:-5} --alternate --out "$OUT/step_split_ab.json" \
  > "$OUT/step_split_ab.log" 2>&1
echo "step rc=$?"; grep -E "round|\|" "$OUT/step_split_ab.log" | tail -12
python3 bench/exp/step_ratios.py "$OUT/step_split_ab.json"
