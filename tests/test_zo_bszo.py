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


def test_bszo_posterior_follows_algorithm_1_with_the_residual_rule_of_eq_13():
    """Coordinate observations are independent scalar updates; before each one the noise variance takes the
    residual against the mean before the update (eq. 13). The extra observation re-uses y_j of the largest
    posterior variance. Written here as scalar recursions, independently of the matrix code."""
    ys, p2, s2, alpha, floor = [0.7, -1.3, 2.1], 1.5, 0.5, 0.25, 0.0
    mu, var, noise = [0.0] * 3, [p2] * 3, s2

    def observe(j, noise):
        r = ys[j] - mu[j]
        noise = max((1 - alpha) * noise + alpha * r * r, floor)
        gain = var[j] / (var[j] + noise)
        mu[j] += gain * (ys[j] - mu[j])
        var[j] = var[j] * noise / (var[j] + noise)
        return noise

    for j in range(3):
        noise = observe(j, noise)
    noise = observe(max(range(3), key=lambda j: var[j]), noise)
    got_mu, got_cov, got_noise = bszo_posterior(ys, prior_var=p2, noise_var=s2, alpha=alpha, extra_observations=1)
    torch.testing.assert_close(got_mu, torch.tensor(mu, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.diagonal(got_cov), torch.tensor(var, dtype=torch.float64), rtol=1e-12, atol=0)
    assert got_noise == pytest.approx(noise, rel=1e-12)
    assert torch.count_nonzero(got_cov - torch.diag(torch.diagonal(got_cov))) == 0


def test_without_adaptation_the_posterior_is_corollary_3_6():
    """m = k, fixed noise: mu = gamma Y, Sigma = gamma sigma_e^2 I, gamma = sigma_p^2 / (sigma_p^2 + sigma_e^2)."""
    ys, p2, s2 = [0.7, -1.3, 2.1, 0.2], 1.5, 0.5
    mu, cov, noise = bszo_posterior(ys, prior_var=p2, noise_var=s2, alpha=0.3, extra_observations=0,
                                    adaptive_noise=False)
    gamma = p2 / (p2 + s2)
    torch.testing.assert_close(mu, gamma * torch.tensor(ys, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(cov, gamma * s2 * torch.eye(4, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    assert noise == s2


def test_the_noise_floor_holds():
    _, _, noise = bszo_posterior([1e-9, 1e-9], prior_var=1.0, noise_var=1.0, alpha=1.0, noise_floor=0.01)
    assert noise == 0.01


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
    opt = zk.optim.BSZO(model.parameters(), lr=0.02, k=k, prior_var=1.0, noise_var=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / 1000)
    for _ in range(1000):
        opt.step(closure)
        schedule.step()
    assert closure().item() <= 1.10 * optimum, (closure().item(), optimum)
