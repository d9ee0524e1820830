# Sourced by the bench/exp device scripts: $OUT made, Triton out of interpreter mode, unbuffered Python, ROOT (this
# tree) on PYTHONPATH, the GPU, driver and versions printed (and kept in $OUT/env.txt); the helpers below.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/env.txt"
SECONDS=0

copy_tree() {  # dir: a variant's copy of the tree (edit it, build it or share this tree's extension)
  mkdir -p "$1" && cp -r "$ROOT"/csrc "$ROOT"/zokernels "$ROOT"/setup.py "$ROOT"/bench "$ROOT"/tests "$1"/
}

build() {  # dir, extra nvcc flags, name[, parallel jobs]: a fresh ahead-of-time build (ninja does not see the
  # flags, hence the rm), log in $OUT/build_<name>.log; several variants build at once with fewer jobs each
  (cd "$1" && rm -rf build zokernels/_C*.so && NVCC_APPEND_FLAGS="$2" ZOKERNELS_BUILD_CUDA=1 MAX_JOBS=${4:-16} \
     python3 setup.py build_ext --inplace > "$OUT/build_$3.log" 2>&1; echo "build $3 rc=$? ${SECONDS}s")
}

build_tree() {  # this tree's build (name main); the script stops with the build log's tail where no extension came
  # out, else the log is dropped (the tool returns at most 8 files)
  build "$ROOT" "" main
  ls zokernels/_C*.so > /dev/null 2>&1 || { tail -30 "$OUT/build_main.log"; exit 1; }
  rm -f "$OUT/build_main.log"
}

test_group() {  # name, time limit in s, pytest arguments...: one pytest process, log in $OUT/pytest_<name>.log
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 -m pytest -q -rs "$@" > "$OUT/pytest_$name.log" 2>&1
  echo "$name rc=$?: $(tail -1 "$OUT/pytest_$name.log")"
}

bench_lowrank() {  # dir, name, bench_lowrank.py arguments...: that tree's benchmark, log and JSON in $OUT
  local dir=$1 name=$2; shift 2
  (cd "$dir" && PYTHONPATH=$dir timeout 300 python3 bench/bench_lowrank.py "$@" --out "$OUT/lowrank_$name.json" 2>&1 \
     | tee "$OUT/lowrank_$name.log" | grep -E "one call|per layer|auto choices")
}

gaussian_probe() {  # dir, tag, gaussian_probe.py arguments...: that tree's Gaussian probe, a JSON line to $OUT/probe.jsonl
  local dir=$1 tag=$2; shift 2
  (cd "$dir" && PYTHONPATH=$dir timeout 120 python3 bench/exp/gaussian_probe.py "$tag" "$@" 2>&1 | tail -1 \
     | tee -a "$OUT/probe.jsonl")
}
