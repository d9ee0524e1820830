#!/usr/bin/env bash
# Gaussian CUDA kernels, variants by -D flag: the long series for -2 ln u0 below w = 1/64 (production) or the short
# series w (2 + w) below 1/128; the K > 1 kernel at B blocks per SM (mbB) with two directions per loop trip or one
# (u1). Each build timed by bench/exp/gaussian_probe.py in two alternating passes, then the last variant at other
# table-row sizes (table last). VARIANTS="name flags;..." overrides the list.
source bench/exp/device_run.sh
SHORT="-DZK_SHORT_SERIES -DZK_SERIES_BELOW=0.0078125f"
VARIANTS=${VARIANTS:-"short_mb4 $SHORT -DZK_MULTI_MIN_BLOCKS=4;short_mb5 $SHORT -DZK_MULTI_MIN_BLOCKS=5;\
short_mb4u1 $SHORT -DZK_MULTI_MIN_BLOCKS=4 -DZK_MULTI_UNROLL2=0;short_mb5u1 $SHORT -DZK_MULTI_MIN_BLOCKS=5 -DZK_MULTI_UNROLL2=0"}
NAMES=""
IFS=';' read -ra LIST <<< "$VARIANTS"
for v in "${LIST[@]}"; do
  read -r n flags <<< "$v"; NAMES="$NAMES $n"
  copy_tree /tmp/$n; build /tmp/$n "$flags" $n 4 &
done; wait
for pass in 1 2; do for n in $NAMES; do gaussian_probe /tmp/$n $n; done; done
for c in ${CHUNKS:-8192 16384}; do gaussian_probe /tmp/$n $n --chunk $c; done
python3 bench/exp/gaussian_probe.py --table "$OUT/probe.jsonl"
echo "total ${SECONDS}s"
