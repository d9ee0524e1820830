"""BSZO: the Kalman algebra against the closed-form Gaussian posterior, the step's estimate against autograd
(its quality grows with k), convergence."""
import math

import pytest
import torch

import zokernels as zk
from zokernels.zo import PerturbedEvaluator, bszo_posterior, bszo_step, kalman_update

from .zo_problems import flat, least_squares, mlp, true_gradient


def test_sequential_kalman_updates_equal_the_batch_posterior():
    """Observations y = D g + nu, nu_j ~ N(0, s2 |d_j|^2), prior N(0, p2 I): posterior precision
    I/p2 + D^T W D, mean cov D^T W y, W = diag(1 / (s2 |d_j|^2))."""
    gen = torch.Generator().manual_seed(0)
    k, m, p2, s2 = 5, 9, 2.0, 0.3
    D = torch.randn(m, k, generator=gen, dtype=torch.float64)
    y = torch.randn(m, generator=gen, dtype=torch.float64)
    mu, cov = torch.zeros(k, dtype=torch.float64), p2 * torch.eye(k, dtype=torch.float64)
    for j in range(m):
        mu, cov = kalman_update(mu, cov, D[j], float(y[j]), s2)
    W = torch.diag(1.0 / (s2 * (D * D).sum(1)))
    cov_batch = torch.linalg.inv(torch.eye(k, dtype=torch.float64) / p2 + D.T @ W @ D)
    torch.testing.assert_close(cov, cov_batch, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mu, cov_batch @ D.T @ W @ y, rtol=1e-10, atol=1e-12)


def test_bszo_posterior_coordinate_design_closed_form():
    """Coordinate observations: mu_i = p2 / (p2 + s2) y_i; residual r = y_k s2 / (p2 + s2) sets the new noise;
    the extra observation re-uses y_1 (all variances tie: lowest index) under the new noise."""
    ys, p2, s2, alpha = [0.7, -1.3, 2.1], 1.5, 0.5, 0.25
    mu, cov, noise = bszo_posterior(ys, prior_var=p2, noise_var=s2, alpha=alpha, extra_observations=1)
    r = ys[-1] * s2 / (p2 + s2)
    assert noise == pytest.approx((1 - alpha) * s2 + alpha * r * r, rel=1e-12)
    v = p2 * s2 / (p2 + s2)
    v1 = v * noise / (v + noise)
    mu1 = p2 / (p2 + s2) * ys[0]
    mu1 = mu1 + v / (v + noise) * (ys[0] - mu1)
    expected_mu = [mu1, p2 / (p2 + s2) * ys[1], p2 / (p2 + s2) * ys[2]]
    torch.testing.assert_close(mu, torch.tensor(expected_mu, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.diagonal(cov), torch.tensor([v1, v, v], dtype=torch.float64), rtol=1e-12, atol=0)
    _, _, unchanged = bszo_posterior(ys, prior_var=p2, noise_var=s2, alpha=alpha, extra_observations=0)
    assert unchanged == noise


def _mean_step_cosine(k, seeds):
    model, closure = mlp()
    grad = true_gradient(model, closure)
    start = [p.detach().clone() for p in model.parameters()]
    base = flat(model)
    evaluator = PerturbedEvaluator([list(model.parameters())])
    total = 0.0
    for seed in seeds:
        bszo_step(evaluator, closure, seed=seed, eps=1e-4, k=k, lrs=[1.0], weight_decays=[0.0], prior_var=1.0,
                  noise_var=1.0, alpha=0.1, rounding="nearest")
        step = base - flat(model)
        total += torch.nn.functional.cosine_similarity(step, grad, dim=0).item()
        with torch.no_grad():
            for p, s in zip(model.parameters(), start):
                p.copy_(s)
    return total / len(seeds)


def test_bszo_step_direction_aligns_better_with_the_gradient_as_k_grows():
    """One step's update lies in span(z_1..z_k) with weights ~ z_i^T grad: its cosine with the true gradient
    grows like sqrt(k / n) (n = 121 here), averaged over 60 seeds."""
    cos = {k: _mean_step_cosine(k, range(60)) for k in (1, 4, 16)}
    assert 0 < cos[1] < cos[4] - 0.05 < cos[16] - 0.1, cos
    assert cos[16] > 0.25, cos


def test_bszo_step_spends_k_plus_one_forward_passes_and_updates_along_mu():
    model, closure, _ = least_squares()
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    calls = []
    result = bszo_step(PerturbedEvaluator([params]), lambda: calls.append(1) or closure(), seed=4, eps=1e-3, k=3,
                       lrs=[0.05], weight_decays=[0.0], prior_var=1.0, noise_var=1.0, alpha=0.1, rounding="nearest")
    assert len(calls) == result.forward_passes == 4
    expected = [s.clone() for s in start]
    zk.combine_(expected, seed=4, coeffs=[-0.05 * m for m in result.projected_grad], streams=[0, 1, 2])
    assert all(torch.equal(p.detach(), e) for p, e in zip(params, expected))
    assert math.isfinite(result.noise_var) and result.noise_var != 1.0


@pytest.mark.parametrize("k", [2, 4])
def test_bszo_converges_on_least_squares(k):
    """1000 steps with a linear learning-rate decay (a torch.optim.lr_scheduler on the param groups) reach the
    least-squares optimum within 10%. (At a constant lr the one-sided differences' curvature term leaves a
    noise floor near 1.6x the optimum.)"""
    model, closure, optimum = least_squares()
    opt = zk.optim.BSZO(model.parameters(), lr=0.02, k=k)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / 1000)
    for _ in range(1000):
        opt.step(closure)
        schedule.step()
    assert closure().item() <= 1.10 * optimum, (closure().item(), optimum)
