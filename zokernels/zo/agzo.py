"""AGZO (arXiv 2601.17261): perturbations confined to activation subspaces recomputed during the forward pass.

For a linear layer y = x W^T the gradient is delta^T X: its rows lie in the span of the layer's inputs. During
the step's unperturbed forward pass each targeted layer gets an orthonormal basis V [d_in, r] of its input
activations (power iteration, subspace.activation_basis) and is then perturbed along Z = N V^T, N [d_out, r]
regenerated from the counter contract (element (i, j) = index i * r + j of stream 0 under the step seed and the
layer's tensor id): drawn for all layers in one launch per perturbed pass (d_out x r floats per layer), never kept
between passes. Parameters outside the targeted linears (biases, norms, embeddings) take an
ordinary Gaussian perturbation (stream 1), as in the paper. Evaluation never writes the weights:
y = x W^T + c (x V) N^T. The update W -= lr g N V^T is one lowrank_combine_ call over all layers.
docs/algorithms.md (AGZO) has the equations and the choices.
"""
from typing import List, Optional, Sequence, Tuple

import torch

from .. import ops
from .perturbation import PerturbedEvaluator, StepResult, evaluate_closure, finite
from .subspace import BasisGraphs, SharedProjection, activation_basis, check_rank

DENSE_STREAM = 1  # the Gaussian stream of the parameters outside the targeted linears (N uses stream 0)
# Whether AGZO's projections x V take SharedProjection's split path. Off: its bases are drawn anew every step, so
# each would be split (a few small launches) every step, and its r = 1 projection is a memory-bound GEMV whose
# device saving is small; AGZO's steps are host-bound. NVIDIA H200, 2026-12-03 (bench/NOTES.md, twenty-second
# session): host time per projection 28.7 us float32 against 41.8 us split; the step with the split slower in 9
# of 11 rounds of two in-process A/Bs in alternating order (median ratios 1.20 and 1.21). bench_step's agzo-split
# row turns it on.
SPLIT_PROJECTION = False


class LowRankPerturbation:
    """Forward hooks on the target layers that add c (x V_i) N_i^T to their outputs during an evaluation.

    layers: (name, module) pairs with a 2-D `weight`; layer i has tensor id i. bases[i]: V_i [d_in, r] float32
    (None until an evaluation with refresh=True has seen the layer's input). cuda_graphs: compute the bases of
    CUDA inputs by CUDA-graph replays (subspace.BasisGraphs: the same values, fewer host launches, an input
    buffer (bf16 as stored, else float32) per captured input shape kept between steps, at most 8 shapes)."""

    def __init__(self, layers: Sequence[Tuple[str, torch.nn.Module]], rank: int, *, power_iters: int = 1,
                 backend: str = "auto", cuda_graphs: bool = True):
        self.layers = list(layers)
        self.rank, self.power_iters, self.backend = check_rank(self.layers, rank), power_iters, backend
        self.bases: List[Optional[torch.Tensor]] = [None] * len(self.layers)
        self.graphs = BasisGraphs() if cuda_graphs else None

    def loss(self, closure, *, seed: int, scale: float, refresh: bool, evaluate) -> float:
        """evaluate(closure) with every target layer perturbed by scale * N_i V_i^T (none if scale is 0); refresh:
        compute each V_i from the layer's input in this pass (first call of the layer)."""
        refreshed = set()
        last = {}  # consecutive layers fed the same tensor (q/k/v projections) share its basis; x is kept alive here
        factors = self._factors(seed, scale) if scale != 0.0 else None  # scale * N_i
        projection = SharedProjection(split=SPLIT_PROJECTION)  # ... and its x V

        def hook_for(i):
            def hook(module, args, output):
                x = args[0]
                if refresh and i not in refreshed:
                    key = (x.data_ptr(), x.shape, x.stride(), x.dtype, x._version)
                    if last.get("key") != key:  # one entry only: holding every layer's input would cost memory
                        last.update(key=key, x=x, basis=activation_basis(x, self.rank, seed=seed, graphs=self.graphs,
                                                                         power_iters=self.power_iters))
                    self.bases[i] = last["basis"]
                    refreshed.add(i)
                if scale == 0.0:
                    return None
                basis = self.bases[i]
                if basis is None:
                    raise RuntimeError(f"AGZO: layer {self.layers[i][0]!r} has no basis yet (refresh it first)")
                xv = projection(x, basis)
                # one rounding of output + delta into output's dtype; at r = 1 no float32 [tokens, d_out] temporary.
                # With autograd on, the reference's torch ops, which autograd records (the fused backends refuse)
                backend = "reference" if torch.is_grad_enabled() else self.backend
                ops.lowrank_delta_add_(output, x, basis, factors[i], scale=1.0, xv=xv, backend=backend)
                return output
            return hook

        handles = [m.register_forward_hook(hook_for(i)) for i, (_, m) in enumerate(self.layers)]
        try:
            return evaluate(closure)
        finally:
            for h in handles:
                h.remove()

    def _factors(self, seed: int, scale: float) -> List[torch.Tensor]:
        """scale * N_i [d_out_i, r] float32 of every layer (tensor id i, stream 0): views of one buffer filled by
        one combine_ launch (0 + scale * z, rounded once), instead of a normal() call per layer per pass."""
        sizes = [m.weight.shape[0] * self.rank for _, m in self.layers]
        flat = torch.zeros(sum(sizes), device=self.layers[0][1].weight.device)
        factors = [v.view(-1, self.rank) for v in flat.split(sizes)]
        ops.combine_(factors, seed=seed, coeffs=[scale], streams=[0], tensor_ids=list(range(len(factors))),
                     backend=self.backend)
        return factors

    def update(self, *, seed: int, coeff: float, rounding: str):
        """W_i += coeff * N_i V_i^T for every layer with a basis: one multi-tensor lowrank_combine_ call."""
        idx = [i for i, v in enumerate(self.bases) if v is not None]
        if idx and coeff != 0.0:
            ops.lowrank_combine_([self.layers[i][1].weight.data for i in idx], [self.bases[i] for i in idx], seed=seed,
                                 coeffs=[coeff], streams=[0], tensor_ids=idx, rounding=rounding, rounding_seed=seed,
                                 backend=self.backend)


def agzo_step(perturbation: LowRankPerturbation, closure, *, seed: int, eps: float, lr: float, refresh: bool,
              dense: Optional[PerturbedEvaluator] = None, rounding: str = "stochastic") -> StepResult:
    """One AGZO step (two forward passes):
    f0 = L(W) (the bases V_i refreshed from this pass's activations if `refresh`),
    f+ = L(W_i + eps N_i V_i^T for every targeted layer i, theta_d + eps z_d for the `dense` parameters),
    g = (f+ - f0) / eps, W_i <- W_i - lr g N_i V_i^T, theta_d <- theta_d - lr g z_d. NaN/inf: nothing written."""
    base = perturbation.loss(closure, seed=seed, scale=0.0, refresh=refresh, evaluate=evaluate_closure)

    def perturbed(c):
        return dense.loss(c, seed=seed, stream=DENSE_STREAM, scale=eps) if dense is not None else evaluate_closure(c)

    loss_plus = perturbation.loss(closure, seed=seed, scale=eps, refresh=False, evaluate=perturbed)
    if not finite(base, loss_plus):
        if dense is not None:
            dense.discard()
        return StepResult(loss=float("nan"), projected_grad=[float("nan")], forward_passes=2, skipped=True, seed=seed)
    g = (loss_plus - base) / eps
    perturbation.update(seed=seed, coeff=-lr * g, rounding=rounding)
    if dense is not None:
        dense.update(seed=seed, streams=[DENSE_STREAM], group_coeffs=[[-lr * g]], decay=[0.0], rounding=rounding)
    return StepResult(loss=base, projected_grad=[g], forward_passes=2, skipped=False, seed=seed)
