#!/usr/bin/env bash
# Ninth session, tenth device call: build, then bench_lowrank of both backends (K = 1 and 4, longest-first
# tables) with device_ms (host hidden behind a GPU sleep) and --save-auto.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
rm -rf build zokernels/_C*.so; ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; echo "build rc=$? ${SECONDS}s"
timeout 400 python3 bench/bench_lowrank.py --backend triton,cuda --save-auto --out "$OUT/lowrank_triton_vs_cuda.json" 2>&1 \
   | tee "$OUT/lowrank.log" | grep -E "one call|per layer|auto choices" | head -40
cp zokernels/backends/auto_choices.json "$OUT/"
echo "total ${SECONDS}s"
