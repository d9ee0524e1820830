"""MeZO step: the estimate against autograd, convergence, and unbiased low-precision updates."""
import torch

import zokernels as zk
from zokernels.zo import PerturbedEvaluator, mezo_step

from .zo_problems import flat, least_squares, mlp, true_gradient


def test_the_expected_update_points_along_the_true_gradient():
    """E[-delta theta / lr] = E[z z^T] grad = grad (eps -> 0): the mean over 400 seeds has cosine >= 0.7 with
    autograd's gradient (121 parameters: the sampling error alone allows about 0.87)."""
    model, closure = mlp()
    grad = true_gradient(model, closure)
    start = [p.detach().clone() for p in model.parameters()]
    evaluator = PerturbedEvaluator([list(model.parameters())])
    total = torch.zeros_like(grad)
    for seed in range(400):
        mezo_step(evaluator, closure, seed=seed, eps=1e-4, lrs=[1.0], weight_decays=[0.0], rounding="nearest")
        total -= flat(model) - torch.cat([s.reshape(-1).double() for s in start])
        with torch.no_grad():
            for p, s in zip(model.parameters(), start):
                p.copy_(s)
    cosine = torch.nn.functional.cosine_similarity(total, grad, dim=0).item()
    assert cosine >= 0.7, cosine


def test_one_step_is_g_times_z_with_g_the_central_difference():
    model, closure = least_squares()[:2]
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    result = mezo_step(PerturbedEvaluator([params]), closure, seed=9, eps=1e-3, lrs=[0.1], weight_decays=[0.0],
                       rounding="nearest")
    updated = [p.detach().clone() for p in params]
    with torch.no_grad():
        plus = [s.clone() for s in start]
        zk.perturb_(plus, seed=9, scale=1e-3)
        for p, v in zip(params, plus):
            p.copy_(v)
        loss_plus = closure().item()
        minus = [s.clone() for s in start]
        zk.perturb_(minus, seed=9, scale=-1e-3)
        for p, v in zip(params, minus):
            p.copy_(v)
        loss_minus = closure().item()
    g = (loss_plus - loss_minus) / 2e-3
    assert abs(result.projected_grad[0] - g) <= 1e-9 * max(1.0, abs(g))
    expected = [s.clone() for s in start]
    zk.combine_(expected, seed=9, coeffs=[-0.1 * result.projected_grad[0]])
    assert all(torch.equal(a, b) for a, b in zip(updated, expected))
    assert result.forward_passes == 2 and not result.skipped
    assert abs(result.loss - 0.5 * (loss_plus + loss_minus)) < 1e-12


def test_mezo_converges_on_least_squares():
    """600 steps (1200 forward passes) reach the least-squares optimum within 2%."""
    model, closure, optimum = least_squares()
    opt = zk.optim.MeZO(model.parameters(), lr=0.02)
    for _ in range(600):
        opt.step(closure)
    assert closure().item() <= 1.02 * optimum, (closure().item(), optimum)


def _bf16_regression():
    """Weights in [4, 6) (bf16 spacing 2^-5) started 0.25 away from the optimum: MeZO's per-step changes are
    smaller than half a spacing, so round-to-nearest keeps almost none of them."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=gen)
    w_star = (4 + 2 * torch.rand(1, 16, generator=gen)).to(torch.bfloat16).float()
    y = x @ w_star.T
    model = torch.nn.Linear(16, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_star + 0.25 * torch.randn(1, 16, generator=gen))
    model.to(torch.bfloat16)
    return model, lambda: torch.nn.functional.mse_loss(model(x.to(torch.bfloat16)).float(), y)


def test_bf16_training_with_stochastic_rounding_reaches_a_loss_nearest_rounding_does_not():
    final = {}
    for rounding in ("stochastic", "nearest"):
        model, closure = _bf16_regression()
        start = closure().item()
        opt = zk.optim.MeZO(model.parameters(), lr=2e-3, eps=0.05, rounding=rounding, seed=3)
        for _ in range(800):
            opt.step(closure)
        final[rounding] = closure().item()
    assert final["stochastic"] < 0.2 * start, final
    assert final["nearest"] > 3 * final["stochastic"], final
