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
probe() {  # variant, extra gaussian_probe.py arguments
  local n=$1; shift
  (cd /tmp/$n && PYTHONPATH=/tmp/$n timeout 120 python3 bench/exp/gaussian_probe.py $n "$@" 2>&1 | tail -1 | tee -a "$OUT/probe.jsonl")
}
for pass in 1 2; do for n in $NAMES; do probe $n; done; done
for c in ${CHUNKS:-8192 16384}; do probe $n --chunk $c; done
python3 - "$OUT/probe.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'variant':12s} {'chunk':>6s} {'roof':>6s} {'K1':>7s} {'xK1':>6s} {'K1sr':>7s} {'K16':>7s} {'K16sr':>7s} {'radK1':>7s} {'dz':>8s}")
for r in rows:
    print(f"{r['tag']:12s} {r['chunk']:6d} {r['roofline_ms']:6.3f} {r['k1']:7.3f} {r['x_k1']:6.3f} {r['k1_sr']:7.3f} "
          f"{r['k16']:7.3f} {r['k16_sr']:7.3f} {r.get('rad_k1', 0):7.3f} {r['max_abs_dz']:8.2e}")
PY
echo "total ${SECONDS}s"
