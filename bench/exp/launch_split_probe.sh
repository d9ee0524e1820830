#!/usr/bin/env bash
# One launch for OPT-1.3B's 388 parameters (512 tensors a launch) against four (128, the limit before): Gaussian
# perturb_/combine_ through bench/exp/gaussian_probe.py with --max-tensors 128 on the same build, two alternating
# passes; the K = 1 Gaussian kernel at 5 and 6 blocks per SM (ZK_K1_BLOCKS); then the CUDA low-rank benchmark
# (144 linears: one launch where there were two) against a copy held at 128 tensors a launch.
source bench/exp/device_run.sh
copy_tree /tmp/b6
build "$ROOT" "" main 8 & build /tmp/b6 "-DZK_K1_BLOCKS=6" b6 8 & wait
probe() {  # dir, tag, gaussian_probe.py arguments
  local dir=$1 tag=$2; shift 2
  (cd $dir && PYTHONPATH=$dir timeout 120 python3 bench/exp/gaussian_probe.py $tag "$@" 2>&1 | tail -1 | tee -a "$OUT/probe.jsonl")
}
for pass in 1 2; do
  probe "$ROOT" b5_launch512; probe "$ROOT" b5_launch128 --max-tensors 128
  probe /tmp/b6 b6_launch512; probe /tmp/b6 b6_launch128 --max-tensors 128
done
python3 - "$OUT/probe.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'variant':14s} {'roof':>6s} {'K1':>7s} {'xK1':>6s} {'K1sr':>7s} {'K16':>7s} {'K16sr':>7s} {'radK1':>7s}")
for r in rows:
    print(f"{r['tag']:14s} {r['roofline_ms']:6.3f} {r['k1']:7.3f} {r['x_k1']:6.3f} {r['k1_sr']:7.3f} {r['k16']:7.3f} "
          f"{r['k16_sr']:7.3f} {r['rad_k1']:7.3f}")
PY
timeout 200 python3 -m pytest -q -x tests/test_cuda_backend.py 2>&1 | tail -2
copy_tree /tmp/l128  # with main's extension; max_tensors_per_launch() held at 128
sed -i 's/    return _state\["max_tensors"\] if _state\["loaded"\] else None/    return 128 if _state["loaded"] else None/' \
  /tmp/l128/zokernels/backends/cuda_backend.py
grep -c 'return 128 if' /tmp/l128/zokernels/backends/cuda_backend.py | sed 's/^/128-limit edit applied: /'
bench_lowrank /tmp/l128 two_launches --backend cuda --ks 1
bench_lowrank "$ROOT" one_launch --backend cuda --ks 1
echo "total ${SECONDS}s"
