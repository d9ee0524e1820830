#!/usr/bin/env bash
# Twenty-fourth session, second device call: why the withdrawn 32 x 256 prepared-fragment kernel (77d870a,
# ZK_TC_PREPARED_RANK=32: 1.554 device ms at r = 32 nearest) is slower than its probe (product_walk_probe.py, a
# basis per weight, regenerated M: 1.310 ms). Variants: base (this tree), p32 (77d870a), p32a (77d870a with the
# coefficients' finiteness check after the first tile's loads); shipped as _old/p32, _old/p32a (carry _old).
# bench_lowrank r = 32 on each, then ncu (durations, stalls) of p32's and p32a's two kernels and of the probe.
source bench/exp/device_run.sh
FLAGS="-DZK_TC_PREPARED_RANK=32 -lineinfo"
for v in p32 p32a; do rm -rf /tmp/v_$v; cp -r "$ROOT/_old/$v" /tmp/v_$v; build /tmp/v_$v "$FLAGS" $v 5 & done
copy_tree /tmp/v_base; build /tmp/v_base "" base 5 &
wait
for v in base p32 p32a; do ls /tmp/v_$v/zokernels/_C*.so > /dev/null 2>&1 || { echo "no build $v"; tail -20 "$OUT/build_$v.log"; }; done
rm -f "$OUT"/build_*.log
for v in base p32 p32a; do
  bench_lowrank /tmp/v_$v "$v" --ks 1 --ranks 32 --backend cuda > /dev/null; rm -f "$OUT/lowrank_$v.log"
done
python3 bench/exp/lowrank_table.py "$OUT" base p32 p32a
KEYS="^\s+(Duration|DRAM Throughput|Memory Throughput|L1/TEX Hit|L2 Hit|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Grid Size|Block Size)"
profile() {  # name, kernel regex, skip, count, command...
  local name=$1 kernel=$2 skip=$3 count=$4; shift 4
  timeout 200 ncu --clock-control none --set full --import-source yes --kernel-name regex:"$kernel" --launch-skip $skip \
    --launch-count $count -f -o /tmp/$name "$@" > /tmp/$name.log 2>&1 || { echo "ncu $name failed"; tail -5 /tmp/$name.log; return; }
  ncu --import /tmp/$name.ncu-rep --page details > /tmp/${name}_details.txt 2>&1
  ncu --import /tmp/$name.ncu-rep --page source --csv --print-source sass > /tmp/${name}_sass.csv 2>&1
  { echo "=== $name (${SECONDS}s)"; grep -E "^  [a-zA-Z_].*\(|$KEYS" /tmp/${name}_details.txt
    grep -iE "stall" /tmp/${name}_details.txt | head -8
    python3 bench/exp/ncu_source_top.py /tmp/${name}_sass.csv 12; } | tee -a "$OUT/ncu_summary.txt"
}
for v in p32 p32a; do
  (cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v profile $v "lowrank_basis_fragments_kernel|lowrank_tc_kernel" 2 2 \
     python3 bench/ncu_target.py lowrank 32 nearest cuda)
done
PROBE_ONLY="32,256,1,per weight,0,32" profile probe product_walk 1 3 python3 bench/exp/product_walk_probe.py
echo "total ${SECONDS}s"
