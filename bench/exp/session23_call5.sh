#!/usr/bin/env bash
# Twenty-third session, fifth device call: the tile walks again with whole 16-byte stores (interleaved rows
# included), then the product walk (product_walk_probe.py: W += M V^T from prepared fp16 fragments, no staging,
# Philox or scales) per block geometry at r = 32 and 64: does a 32 x 256 tile keep its walk's 1.09x under a product?
source bench/exp/device_run.sh
python3 bench/exp/traversal_probe_cuda.py "$OUT/walk_stride_v4_stores.json" 2>&1 | grep columns
python3 bench/exp/product_walk_probe.py "$OUT/product_walk.json" 2>&1 | grep -E "product walk|Error|error" | head -20
echo "total ${SECONDS}s"
