#!/usr/bin/env bash
# Twenty-fourth session, third device call: the 32 x 256 prepared-fragment kernel (77d870a's ZK_TC_PREPARED_RANK=32)
# with the changes the second call's ncu pointed to, each a tree under _old/ (carry _old): p32a (the finiteness
# check after the first loads), p32b (+ the B fragments by a plain global load with L2's 256-byte hint instead of
# __ldg's non-coherent path; ncu had the kernel's top stalls on MIO, the probe's on global loads), p32c (+ the
# fragments' kernel spread over every row block, not one block per weight: 41 us for four layers). bench_lowrank
# r = 32 on base (this tree) and each, the CUDA low-rank tests on p32c, ncu of p32c's two kernels.
source bench/exp/device_run.sh
FLAGS="-DZK_TC_PREPARED_RANK=32 -lineinfo"
VARIANTS="p32a p32b p32c"
for v in $VARIANTS; do rm -rf /tmp/v_$v; cp -r "$ROOT/_old/$v" /tmp/v_$v; build /tmp/v_$v "$FLAGS" $v 4 & done
copy_tree /tmp/v_base; build /tmp/v_base "" base 4 &
wait
for v in base $VARIANTS; do ls /tmp/v_$v/zokernels/_C*.so > /dev/null 2>&1 || { echo "no build $v"; tail -20 "$OUT/build_$v.log"; }; done
rm -f "$OUT"/build_*.log
for v in base $VARIANTS; do
  bench_lowrank /tmp/v_$v "$v" --ks 1 --ranks 32 --backend cuda > /dev/null; rm -f "$OUT/lowrank_$v.log"
done
python3 bench/exp/lowrank_table.py "$OUT" base $VARIANTS
(cd /tmp/v_p32c && PYTHONPATH=/tmp/v_p32c timeout 200 python3 -m pytest -q -x tests/test_lowrank.py \
  tests/test_cuda_backend.py -k cuda > "$OUT/pytest_cuda_p32c.log" 2>&1); echo "tests p32c rc=$?: $(tail -1 "$OUT/pytest_cuda_p32c.log")"
(cd /tmp/v_p32c && PYTHONPATH=/tmp/v_p32c timeout 120 ncu --clock-control none --section SpeedOfLight \
  --section WarpStateStats --kernel-name regex:"lowrank_basis_fragments_kernel|lowrank_tc_kernel" --launch-skip 2 \
  --launch-count 2 python3 bench/ncu_target.py lowrank 32 nearest cuda 2>&1 | grep -E "^  [a-z_].*\(|Duration|DRAM Thr|Stall|stall" | head -30)
echo "total ${SECONDS}s"
