"""zokernels: pip install -e . (pure Python + Triton on any machine; the CUDA extension where it can be built).

ZOKERNELS_BUILD_CUDA=1 forces the CUDA extension (fails without a toolkit), =0 skips it; unset, it is built
when torch is a CUDA build and a CUDA toolkit is found. Without it the backend JIT-builds at first use.
"""
import os
import runpy

from setuptools import find_packages, setup


def cuda_extensions():
    flag = os.environ.get("ZOKERNELS_BUILD_CUDA", "auto")
    if flag == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        if flag == "1":
            raise
        return [], {}
    if flag != "1" and (torch.version.cuda is None or CUDA_HOME is None):
        return [], {}
    build = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "zokernels", "_cuda_build.py"))
    sources = [os.path.relpath(s) for s in build["SOURCES"]]
    ext = CUDAExtension("zokernels._C", sources, extra_compile_args={"cxx": build["CXX_FLAGS"], "nvcc": build["NVCC_FLAGS"]})
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()
setup(
    name="zokernels",
    version="0.1.0",
    description="Fused Triton/CUDA kernels for zeroth-order LLM fine-tuning: seeded perturbations regenerated in place",
    packages=find_packages(include=["zokernels", "zokernels.*"]),
    package_data={"zokernels": ["backends/auto_choices.json"]},
    python_requires=">=3.9",
    install_requires=["torch>=2.1"],
    extras_require={"triton": ["triton>=3.0"], "test": ["pytest", "numpy<2.4", "transformers"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
