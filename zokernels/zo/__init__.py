"""Step functions of the ZO methods (pure: parameters, closure and seed in, a StepResult out), built on ops.

Each function writes the weights only through PerturbedEvaluator.update (one combine_ pass per group).
"""
from .agzo import LowRankPerturbation, agzo_step
from .bszo import bszo_posterior, bszo_step, kalman_update
from .mezo import mezo_step
from .perturbation import (MODES, PerturbedEvaluator, StepResult, check_count, check_loss, evaluate_closure,
                           step_seed)
from .subspace import SharedProjection, activation_basis, gram_basis, target_linears
from .zoact import GRAM_BYTES, CoefficientPerturbation, ZOActLinear, attach, zoact_step

__all__ = ["mezo_step", "bszo_step", "bszo_posterior", "kalman_update", "agzo_step", "zoact_step",
           "PerturbedEvaluator", "LowRankPerturbation", "CoefficientPerturbation", "SharedProjection", "ZOActLinear",
           "attach", "target_linears", "GRAM_BYTES", "activation_basis", "gram_basis", "StepResult", "check_count",
           "check_loss", "evaluate_closure", "step_seed", "MODES"]
