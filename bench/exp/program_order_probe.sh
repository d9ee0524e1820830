#!/usr/bin/env bash
# Low-rank programs longest first (this tree) against weight order (a copy whose launch.lowrank_blocks returns
# its rows unsorted; the same built extension). bench_lowrank of both backends: weight order K = 1, then longest
# first K = 1 and 4 with --save-auto; the low-rank, CUDA and auto tests on this tree.
source bench/exp/device_run.sh
build "$ROOT" "" main
copy_tree /tmp/old  # with the extension just built
sed -i 's/, c_end\], 1)\[order\]$/, c_end], 1)/' /tmp/old/zokernels/backends/launch.py
grep -c ', c_end\], 1)$' /tmp/old/zokernels/backends/launch.py | sed 's/^/weight-order edit applied: /'
echo "== weight order"; bench_lowrank /tmp/old weight_order --backend triton,cuda --ks 1
echo "== longest first"; bench_lowrank "$ROOT" triton_vs_cuda --backend triton,cuda --save-auto
cp zokernels/backends/auto_choices.json "$OUT/"
timeout 300 python3 -m pytest -q -x tests/test_lowrank.py tests/test_cuda_backend.py tests/test_auto_choice.py 2>&1 \
  | tee "$OUT/pytest.log" | tail -1
echo "total ${SECONDS}s"
