"""zokernels: fused kernels for zeroth-order fine-tuning (counter-based perturbations regenerated in place).

The randomness contract is in zokernels.contract; the ops in zokernels.ops.
"""
from . import contract
from .ops import backend_for, combine_, normal, perturb_, perturbed_copy_, rademacher

__version__ = "0.1.0"
__all__ = ["normal", "rademacher", "perturb_", "combine_", "perturbed_copy_", "backend_for", "contract"]
