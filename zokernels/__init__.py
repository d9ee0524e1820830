"""zokernels: fused kernels for zeroth-order fine-tuning (counter-based perturbations regenerated in place).

The randomness contract is in zokernels.contract; the ops in zokernels.ops; the ZO step functions in
zokernels.zo and the torch.optim-style optimizers (MeZO, BSZO) in zokernels.optim.
"""
from . import contract
from .ops import (backend_for, combine_, lowrank_add_, lowrank_combine_, lowrank_delta, lowrank_delta_add_,
                  lowrank_perturbation, lowrank_perturbed_linear, lowrank_project, normal, perturb_, perturbed_copy_,
                  rademacher)
from . import optim, zo  # noqa: E402  (step functions and optimizers, built on the ops)

__version__ = "0.1.0"
__all__ = ["normal", "rademacher", "perturb_", "combine_", "perturbed_copy_", "lowrank_combine_", "lowrank_add_",
           "lowrank_delta", "lowrank_delta_add_", "lowrank_project", "lowrank_perturbation", "lowrank_perturbed_linear",
           "backend_for", "contract", "zo", "optim"]
