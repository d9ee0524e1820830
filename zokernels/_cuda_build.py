"""Build settings of the CUDA extension, shared by setup.py (ahead of time) and the JIT build (first use).
Plain data: setup.py reads this file before the package is installed."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [os.path.join(ROOT, "csrc", name)
           for name in ("zo_perturb.cu", "zo_lowrank.cu", "zo_delta_add.cu", "bindings.cpp")]
ARCHS = ("80", "90")  # compute capabilities with machine code; PTX of the newest is embedded for later GPUs
# No -std flag: torch.utils.cpp_extension picks the standard its headers need (C++17 for torch 2.11, C++20 from
# torch 2.14); the kernels compile under either.
NVCC_FLAGS = ["-O3", "-lineinfo", f"-I{os.path.join(ROOT, 'csrc')}"] + [
    f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS] + [f"-gencode=arch=compute_{ARCHS[-1]},code=compute_{ARCHS[-1]}"]
CXX_FLAGS = ["-O3", f"-I{os.path.join(ROOT, 'csrc')}"]
MIN_CAPABILITY = (8, 0)
