"""ZO-Act (arXiv 2607.01125): a fixed activation subspace per linear layer, computed once; ZO on coefficients.

Each targeted layer becomes ZOActLinear: y = base(x) + (x V) C^T with V [d_in, r] the top-r right singular
vectors of the layer's inputs over a calibration batch (exact, from the Gram matrix X^T X), frozen, and C
[d_out, r] the trainable coefficients (fp32, zero at the start, so the model is unchanged). The effective weight
is W0 + C V^T; the base layer is never written and may be any module (a quantized one included). The ZO
estimate is MeZO's two-point estimate on the C's; the optimizer that consumes it (Adam or SGD) sees it as a
gradient. merge() writes W0 + C V^T into a plain weight with one lowrank_add_ pass.
docs/algorithms.md (ZO-Act) has the equations and the choices.
"""
from typing import List, Tuple

import torch

from .. import ops
from .perturbation import PerturbedEvaluator, StepResult, finite
from .subspace import check_rank, gram_basis, target_linears


class ZOActLinear(torch.nn.Module):
    """base(x) + (x V) C^T. base: a frozen module with in_features/out_features (torch.nn.Linear or a quantized
    linear); basis V: [d_in, r] float32 buffer; coeff C: [d_out, r] float32 Parameter, zero-initialized."""

    def __init__(self, base: torch.nn.Module, basis: torch.Tensor):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.register_buffer("basis", basis.detach().float().contiguous())
        self.coeff = torch.nn.Parameter(torch.zeros(base.out_features, basis.shape[1], device=basis.device))

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def forward(self, x):
        y = self.base(x)
        return y + ((x.float() @ self.basis) @ self.coeff.T).to(y.dtype)

    def merge(self, *, rounding: str = "stochastic", rounding_seed: int = 0, backend: str = "auto") -> torch.nn.Module:
        """Write W0 + C V^T into the base weight (one lowrank_add_ pass), zero C, and return the base module."""
        weight = getattr(self.base, "weight", None)
        if not isinstance(self.base, torch.nn.Linear) or weight is None or weight.dtype not in ops.SUPPORTED_DTYPES:
            raise ValueError(f"cannot merge into a {type(self.base).__name__}: merge needs a floating-point "
                             "torch.nn.Linear base (dequantize a quantized base first)")
        with torch.no_grad():
            ops.lowrank_add_(weight.data, self.coeff.data, self.basis, rounding=rounding, rounding_seed=rounding_seed,
                             backend=backend)
            self.coeff.zero_()
        return self.base


def attach(model: torch.nn.Module, calibration, *, rank: int, targets="all") -> List[Tuple[str, ZOActLinear]]:
    """Replace the targeted linear layers of `model` by ZOActLinear, with bases from one calibration pass:
    calibration() runs the model's forward on calibration data (under no_grad). Returns (name, layer) pairs.
    Raises ValueError if rank exceeds a layer's d_in or its calibration token count."""
    layers = target_linears(model, targets)
    rank = check_rank(layers, rank)
    grams = [None] * len(layers)
    tokens = [0] * len(layers)

    def hook_for(i):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            grams[i] = x.T @ x if grams[i] is None else grams[i] + x.T @ x
            tokens[i] += x.shape[0]
        return hook

    handles = [m.register_forward_pre_hook(hook_for(i)) for i, (_, m) in enumerate(layers)]
    try:
        with torch.no_grad():
            calibration()
    finally:
        for h in handles:
            h.remove()
    wrapped = []
    for i, (name, m) in enumerate(layers):
        if tokens[i] < rank:
            raise ValueError(f"rank {rank} is larger than the {tokens[i]} calibration tokens layer {name!r} saw")
    for i, (name, m) in enumerate(layers):
        device = next(iter(list(m.parameters()) + list(m.buffers()))).device
        layer = ZOActLinear(m, gram_basis(grams[i], rank).to(device))
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        wrapped.append((name, layer))
    return wrapped


def zoact_step(evaluator: PerturbedEvaluator, closure, *, seed: int, eps: float, inner: torch.optim.Optimizer,
               backend: str = "auto") -> StepResult:
    """MeZO's estimate on the coefficients: l+- = L(C +- eps z), g = (l+ - l-) / (2 eps); each C gets
    grad = g z (z regenerated, tensor id = its position) and `inner` (Adam, SGD, ...) takes one step."""
    loss_plus = evaluator.loss(closure, seed=seed, stream=0, scale=eps)
    loss_minus = evaluator.loss(closure, seed=seed, stream=0, scale=-eps)
    if not finite(loss_plus, loss_minus):
        return StepResult(loss=float("nan"), projected_grad=[float("nan")], forward_passes=2, skipped=True, seed=seed)
    g = (loss_plus - loss_minus) / (2.0 * eps)
    params = evaluator.params
    grads = [torch.zeros_like(p) for p in params]
    ops.combine_(grads, seed=seed, coeffs=[g], streams=[0], tensor_ids=list(range(len(params))), backend=backend)
    for p, grad in zip(params, grads):  # grad = g z for every C: one multi-tensor launch, not a normal() per layer
        p.grad = grad
    inner.step()
    for p in params:
        p.grad = None
    return StepResult(loss=0.5 * (loss_plus + loss_minus), projected_grad=[g], forward_passes=2, skipped=False,
                      seed=seed)
