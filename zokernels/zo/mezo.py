"""MeZO (Malladi et al. 2023, arXiv 2305.17333): two-point SPSA with the seed trick (docs/algorithms.md, MeZO)."""
from typing import Sequence

from .perturbation import PerturbedEvaluator, StepResult, finite


def mezo_step(evaluator: PerturbedEvaluator, closure, *, seed: int, eps: float, lrs: Sequence[float],
              weight_decays: Sequence[float], rounding: str = "stochastic") -> StepResult:
    """One MeZO step on the evaluator's parameter groups (lrs / weight_decays: one per group).

    l+ = L(theta + eps z), l- = L(theta - eps z), g = (l+ - l-) / (2 eps),
    theta_g <- (theta_g - lr_g g z) (1 - lr_g wd_g)   (one combine_ pass per group; z = z(seed, stream 0)).
    A NaN/inf loss skips the step: nothing is written (inplace mode: the perturbation is undone).
    """
    loss_plus = evaluator.loss(closure, seed=seed, stream=0, scale=eps)
    loss_minus = evaluator.loss(closure, seed=seed, stream=0, scale=-eps)
    if not finite(loss_plus, loss_minus):
        evaluator.discard()
        return StepResult(loss=float("nan"), projected_grad=[float("nan")], forward_passes=2, skipped=True, seed=seed)
    g = (loss_plus - loss_minus) / (2.0 * eps)
    evaluator.update(seed=seed, streams=[0], group_coeffs=[[-lr * g] for lr in lrs],
                     decay=[lr * wd for lr, wd in zip(lrs, weight_decays)], rounding=rounding)
    return StepResult(loss=0.5 * (loss_plus + loss_minus), projected_grad=[g], forward_passes=2, skipped=False,
                      seed=seed)
