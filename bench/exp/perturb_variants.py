"""Experiment driver (GPU only, not part of the package): compiles bench/exp/perturb_variants.cu with nvcc into a
plain shared library and times the production CUDA perturb_ kernels and the memory-only twin in place on OPT-1.3B's
parameter list, for several chunk sizes, against the copy roofline of the same process, in alternating passes.
Usage: python bench/exp/perturb_variants.py [--out FILE.json] [--variants gaussian,...] [--chunks 32768,65536]"""
import argparse
import ctypes
import json
import os
import subprocess
import sys

import torch
import triton.testing

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_perturb import OPT_1_3B, opt_shapes  # noqa: E402
from zokernels.backends import cuda_backend  # noqa: E402
from zokernels.backends.launch import key_words  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# name: (code in zkx_launch, gaussian, stochastic)
VARIANTS = {
    "gaussian": (0, True, False), "gaussian-sr": (0, True, True), "rademacher": (0, False, False),
    "rademacher-sr": (0, False, True), "memory-only": (1, True, False),
}
UNIT = {True: cuda_backend.GROUP["gaussian"], False: cuda_backend.GROUP["rademacher"]}


def build():
    lib_path = os.path.join(HERE, "libzkx.so")
    subprocess.run(["nvcc", "-O3", "-lineinfo", "-arch=sm_90", "-shared", "-Xcompiler", "-fPIC",
                    f"-I{os.path.join(HERE, '..', '..', 'csrc')}", "-o", lib_path,
                    os.path.join(HERE, "perturb_variants.cu")], check=True)
    lib = ctypes.CDLL(lib_path)
    lib.zkx_launch.restype = ctypes.c_int
    lib.zkx_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                               ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int,
                               ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int,
                               ctypes.c_int, ctypes.c_void_p]
    return lib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--chunks", default="65536", help="comma-separated chunk sizes (elements per table row)")
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    lib = build()
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    params = [torch.randn(s, device=dev, dtype=torch.bfloat16, generator=gen) for s in opt_shapes(**OPT_1_3B)]
    numels = [p.numel() for p in params]
    offsets = [sum(numels[:i]) for i in range(len(numels))]
    numel = sum(numels)
    k0, k1 = (w & 0xFFFFFFFF for w in key_words(1234))
    rk0, rk1 = (w & 0xFFFFFFFF for w in key_words(99))
    chunks = [int(c) for c in args.chunks.split(",")]
    tables = {}
    for unit, chunk in [(u, c) for u in UNIT.values() for c in chunks]:
        parts = []
        for lo in range(0, len(params), lib.zkx_max_tensors()):
            idx = list(range(lo, min(lo + lib.zkx_max_tensors(), len(params))))
            rows = cuda_backend.chunk_rows([numels[i] for i in idx], idx, [offsets[i] for i in idx], unit, chunk)
            parts.append((idx, rows.to(dev)))
        tables[unit, chunk] = parts

    def launch(name, dsts, srcs, chunk):
        code, gaussian, stochastic = VARIANTS[name]
        stream = torch.cuda.current_stream().cuda_stream
        for idx, table in tables[UNIT[gaussian], chunk]:
            d = (ctypes.c_void_p * len(idx))(*[dsts[i].data_ptr() for i in idx])
            s = (ctypes.c_void_p * len(idx))(*[srcs[i].data_ptr() for i in idx])
            err = lib.zkx_launch(code, d, s, len(idx), table.data_ptr(), table.shape[0], 1e-3, 1, k0, k1, rk0, rk1,
                                 int(gaussian), int(stochastic), stream)
            if err != 0:
                raise RuntimeError(f"{name}: launch error {err}")

    chosen = args.variants.split(",")
    if "memory-only" in chosen:  # the twin must compute what it claims: x + 1e-3 rounded to bf16
        out = [torch.empty_like(p) for p in params]
        launch("memory-only", out, params, chunks[0])
        bad = sum(int((o != (p.float() + 1e-3).to(torch.bfloat16)).sum()) for o, p in zip(out, params))
        print(f"memory-only twin: {'exact' if bad == 0 else f'{bad} elements differ'}")
        del out
    src = torch.randn(numel, device=dev, dtype=torch.bfloat16, generator=gen)
    dst = torch.empty_like(src)
    calib = {"torch add_ in place (flat)": lambda: src.add_(1e-3)}
    runs = [(v, c) for v in chosen for c in chunks]
    times = {r: [] for r in runs}
    ctimes = {name: [] for name in calib}
    roof = []
    for _ in range(args.passes):
        roof.append(triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=400, return_mode="median"))
        for name, fn in calib.items():
            ctimes[name].append(triton.testing.do_bench(fn, warmup=50, rep=400, return_mode="median"))
        for v, c in runs:
            times[v, c].append(triton.testing.do_bench(lambda: launch(v, params, params, c), warmup=50, rep=400,
                                                       return_mode="median"))
    roofline = min(roof)
    rows = []
    print(f"{torch.cuda.get_device_name()}: {len(params)} tensors, {numel / 1e9:.3f}e9 bf16, K = 1, in place; copy "
          f"roofline {' / '.join(f'{r:.3f}' for r in roof)} ms")
    print(f"{'variant':28s} {'chunk':>8s} {'ms per pass':24s} {'x roofline':>10s}")
    for name in calib:
        ms = min(ctimes[name])
        rows.append(dict(variant=name, ms=ctimes[name], x_roofline=ms / roofline))
        print(f"{name:28s} {'-':>8s} {' / '.join(f'{t:.3f}' for t in ctimes[name]):24s} {ms / roofline:10.3f}")
    for v, c in runs:
        ms = min(times[v, c])
        rows.append(dict(variant=v, chunk=c, ms=times[v, c], x_roofline=ms / roofline))
        print(f"{v:28s} {c:8d} {' / '.join(f'{t:.3f}' for t in times[v, c]):24s} {ms / roofline:10.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, roofline_ms=roof, rows=rows),
                      f, indent=1)


if __name__ == "__main__":
    main()
