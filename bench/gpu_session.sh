#!/usr/bin/env bash
# One device call: versions, the test suite on the real GPU compiler, error check + sweep, the benchmark.
# Usage (device tool): bash bench/gpu_session.sh [--sweep]; writes logs and JSON under $OUT.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/env.txt"
python3 -m pytest -q -x tests 2>&1 | tee "$OUT/pytest.log" | tail -15
python3 bench/gpu_check.py "$@" --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log" | tail -30
[ -f "$OUT/best.env" ] && . "$OUT/best.env" && echo "bench with $ZOKERNELS_TRITON_TILE-element tiles, $ZOKERNELS_TRITON_WARPS warps"
python3 -m zokernels bench --out "$OUT/perturb.json" 2>&1 | tee "$OUT/bench.log"
