#!/usr/bin/env bash
# Twenty-third session, second device call: interleaved column tiles (ZK_TC_TALL_STRIDE = 2, 4: S programs per
# 128-row block walk its 64-column tiles interleaved, so S neighbouring 128-byte segments of each row are in
# flight together) against the default (stride 1, SASS-identical to the committed kernel), r = 32 and 64, and the
# CUDA tests on stride 2; first the tile-walk probe with the same interleaving (no product, no basis).
set -u
python3 bench/exp/traversal_probe_cuda.py "$OUT/traversal_probe_cuda_stride.json" 2>&1 | grep -v Warning | tail -10
VARIANTS="base:;s2:-DZK_TC_TALL_STRIDE=2;s4:-DZK_TC_TALL_STRIDE=4" TEST_VARIANT=s2 BENCH_ARGS="--ranks 32,64" \
  bash bench/exp/tc_variant_probe.sh
