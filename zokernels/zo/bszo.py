"""BSZO (Feng and Huang, arXiv 2601.01452): Bayesian subspace zeroth-order optimization (Algorithm 1).

docs/algorithms.md (BSZO) gives each equation next to the function below that implements it, and the choices
the paper leaves open (and where its Algorithm 1 and its eq. 13 differ). The posterior algebra is k x k, in float64 on the host; the weights see k perturbed
evaluations and one combine_ pass.
"""
from typing import Sequence, Tuple

import torch

from .perturbation import PerturbedEvaluator, StepResult, finite


def kalman_update(mu: torch.Tensor, cov: torch.Tensor, d: torch.Tensor, y: float,
                  noise_var: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Posterior of g~ ~ N(mu, cov) after observing y = d^T g~ + nu, nu ~ N(0, noise_var |d|^2) (eq. (K)):
    S = d^T cov d + noise_var |d|^2, K = cov d / S, mu += K (y - d^T mu), cov -= K (cov d)^T."""
    cov_d = cov @ d
    s = float(d @ cov_d) + noise_var * float(d @ d)
    gain = cov_d / s
    mu = mu + gain * (y - float(d @ mu))
    cov = cov - torch.outer(gain, cov_d)
    return mu, 0.5 * (cov + cov.T)


def bszo_posterior(ys: Sequence[float], *, prior_var: float, noise_var: float, alpha: float,
                   extra_observations: int = 1, adaptive_noise: bool = True,
                   noise_floor: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """(mu, cov, new noise_var) of the subspace gradient from one-sided differences ys[i] along z_i (eqs. 8-13).

    Prior N(0, prior_var I_k) (eq. 9). Observations y_i along d = e_i, i = 1..k (coordinate-axis sampling,
    Corollary 3.6), then `extra_observations` along e_j, j = argmax diag(cov) (the principal axis of a diagonal
    cov; lowest index on ties), re-using the cached y_j (Algorithm 1). Before each Kalman update, the residual
    rule of eq. 13: r = (y - d^T mu) / |d| with the mean before the update, noise_var <- (1 - alpha) noise_var +
    alpha r^2, floored at noise_floor; adaptive_noise=False keeps noise_var fixed (the paper's ablation).
    """
    k = len(ys)
    eye = torch.eye(k, dtype=torch.float64)
    mu, cov = torch.zeros(k, dtype=torch.float64), prior_var * eye.clone()

    def observe(j, mu, cov, noise_var):
        d, y = eye[j], ys[j]
        if adaptive_noise:
            r = (y - float(d @ mu)) / float(d.norm())
            noise_var = max((1.0 - alpha) * noise_var + alpha * r * r, noise_floor)
        mu, cov = kalman_update(mu, cov, d, y, noise_var)
        return mu, cov, noise_var

    for i in range(k):
        mu, cov, noise_var = observe(i, mu, cov, noise_var)
    for _ in range(extra_observations):
        mu, cov, noise_var = observe(int(torch.argmax(torch.diagonal(cov))), mu, cov, noise_var)
    return mu, cov, noise_var


def bszo_step(evaluator: PerturbedEvaluator, closure, *, seed: int, eps: float, k: int, lrs: Sequence[float],
              weight_decays: Sequence[float], prior_var: float, noise_var: float, alpha: float,
              extra_observations: int = 1, adaptive_noise: bool = True, noise_floor: float = 0.0,
              rounding: str = "stochastic") -> StepResult:
    """One BSZO step: k + 1 forward passes (L(theta), then L(theta + eps z_i) for i = 1..k, z_i = z(seed, i - 1)),
    the posterior above, and theta_g <- (theta_g - lr_g sum_i mu_i z_i) (1 - lr_g wd_g) in one combine_ pass per
    group. A NaN/inf loss skips the step (nothing written, noise_var unchanged). StepResult.noise_var carries the
    adapted noise variance to the next step."""
    base = evaluator.loss(closure)
    ys = []
    for i in range(k):
        loss_i = evaluator.loss(closure, seed=seed, stream=i, scale=eps)
        ys.append((loss_i - base) / eps)
    if not finite(base, *ys):
        evaluator.discard()
        return StepResult(loss=float("nan"), projected_grad=[float("nan")] * k, forward_passes=k + 1, skipped=True,
                          seed=seed, noise_var=noise_var)
    mu, _, noise_var = bszo_posterior(ys, prior_var=prior_var, noise_var=noise_var, alpha=alpha,
                                      extra_observations=extra_observations, adaptive_noise=adaptive_noise,
                                      noise_floor=noise_floor)
    mu = mu.tolist()
    evaluator.update(seed=seed, streams=list(range(k)), group_coeffs=[[-lr * m for m in mu] for lr in lrs],
                     decay=[lr * wd for lr, wd in zip(lrs, weight_decays)], rounding=rounding)
    return StepResult(loss=base, projected_grad=mu, forward_passes=k + 1, skipped=False, seed=seed,
                      noise_var=noise_var)
