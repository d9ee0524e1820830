"""A two-point zeroth-order (SPSA / MeZO-style) step on a small model, written with zokernels' ops.

Each forward pass runs on a perturbed copy made by perturbed_copy_ from a saved original, so the weights
return bit-exact after evaluation; the update is one combine_ pass with stochastic rounding. (The step
functions and optimizers planned for zokernels build on these same ops.)

    python python/spsa_step_example.py
"""
import torch

import zokernels as zk


def spsa_step(model, loss_fn, seed, eps=1e-3, lr=1e-2):
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]  # example only: a real run uses a per-module scratch buffer
    losses = []
    for sign in (+1.0, -1.0):
        zk.perturbed_copy_(params, originals, seed=seed, scale=sign * eps)
        losses.append(loss_fn(model).item())
    for p, o in zip(params, originals):
        p.copy_(o)
    g = (losses[0] - losses[1]) / (2 * eps)
    zk.combine_(params, seed=seed, coeffs=[-lr * g], rounding="stochastic", rounding_seed=seed + 1)
    return sum(losses) / 2


def main(steps=300):
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(256, 1)
    model = torch.nn.Linear(16, 1)
    loss_fn = lambda m: torch.nn.functional.mse_loss(m(x), y)  # noqa: E731
    with torch.no_grad():
        first = loss_fn(model).item()
        for step in range(steps):
            loss = spsa_step(model, loss_fn, seed=step)
    print(f"backend {zk.backend_for('cpu')}: loss {first:.4f} -> {loss:.4f} after {steps} steps ({2 * steps} forward passes)")
    return first, loss


if __name__ == "__main__":
    main()
