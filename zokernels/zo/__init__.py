"""Step functions of the ZO methods (pure: parameters, closure and seed in, a StepResult out), built on ops.

Each function writes the weights only through PerturbedEvaluator.update (one combine_ pass per group).
"""
from .bszo import bszo_posterior, bszo_step, kalman_update
from .mezo import mezo_step
from .perturbation import MODES, PerturbedEvaluator, StepResult, check_loss, step_seed

__all__ = ["mezo_step", "bszo_step", "bszo_posterior", "kalman_update", "PerturbedEvaluator", "StepResult",
           "check_loss", "step_seed", "MODES"]
