from setuptools import find_packages, setup

setup(
    name="zokernels",
    version="0.1.0",
    description="Fused Triton/CUDA kernels for zeroth-order LLM fine-tuning: seeded perturbations regenerated in place",
    packages=find_packages(include=["zokernels", "zokernels.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.1"],
    extras_require={"triton": ["triton>=3.0"], "test": ["pytest", "numpy<2.4"]},
)
