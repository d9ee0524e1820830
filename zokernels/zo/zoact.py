"""ZO-Act (arXiv 2607.01125): a fixed activation subspace per linear layer, computed once; ZO on coefficients.

Each targeted layer becomes ZOActLinear: y = base(x) + (x V) C^T with V [d_in, r] the top-r right singular
vectors of the layer's inputs over a calibration batch (exact, from the Gram matrix X^T X), frozen, and C
[d_out, r] the trainable coefficients (fp32, zero at the start, so the model is unchanged). The effective weight
is W0 + C V^T; the base layer is never written and may be any module (a quantized one included). The ZO
estimate is MeZO's two-point estimate on the C's; the optimizer that consumes it (Adam or SGD) sees it as a
gradient. merge() writes W0 + C V^T into a plain weight with one lowrank_add_ pass.
docs/algorithms.md (ZO-Act) has the equations and the choices.
"""
import weakref
from typing import List, Optional, Sequence, Tuple

import torch

from .. import ops
from .perturbation import StepResult, check_count, evaluate_closure, finite
from .subspace import SharedProjection, check_rank, gram_basis, target_linears


class ZOActLinear(torch.nn.Module):
    """base(x) + (x V) C^T. base: a frozen module with in_features/out_features (torch.nn.Linear or a quantized
    linear); basis V: [d_in, r] float32 buffer; coeff C: [d_out, r] float32 Parameter, zero-initialized.
    projection: a SharedProjection shared with the layers that read the same input (default: its own).
    While `perturbed_coeff` is set (CoefficientPerturbation), the forward reads it in place of C."""

    def __init__(self, base: torch.nn.Module, basis: torch.Tensor, projection: Optional[SharedProjection] = None):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        if basis.dtype != torch.float32 or not basis.is_contiguous() or basis.requires_grad:
            basis = basis.detach().float().contiguous()
        self.register_buffer("basis", basis)  # the caller's tensor itself where it can be: layers may share it
        self.coeff = torch.nn.Parameter(torch.zeros(base.out_features, basis.shape[1], device=basis.device))
        self.projection = SharedProjection() if projection is None else projection
        self.perturbed_coeff: Optional[torch.Tensor] = None

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def forward(self, x):
        y = self.base(x)
        coeff = self.coeff if self.perturbed_coeff is None else self.perturbed_coeff
        # in place, the sum in float32 and rounded once into y's dtype (autograd records it where it must)
        ops.lowrank_delta_add_(y, x, self.basis, coeff, scale=1.0, xv=self.projection(x, self.basis))
        return y

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


GRAM_BYTES = 2 * 2**30  # float64 Gram matrices held at once during calibration (attach's default)


def _calibrate(layers, calibration, hook_for):
    """Run calibration() under no_grad with hook_for(i) as the forward pre-hook of layers[i] (where not None)."""
    handles = []
    for i, (_, m) in enumerate(layers):
        hook = hook_for(i)
        if hook is not None:
            handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            calibration()
    finally:
        for h in handles:
            h.remove()


def attach(model: torch.nn.Module, calibration, *, rank: int, targets="all",
           gram_bytes: int = GRAM_BYTES) -> List[Tuple[str, ZOActLinear]]:
    """Replace the targeted linear layers of `model` by ZOActLinear, with bases from calibration passes:
    calibration() runs the model's forward on calibration data (under no_grad), the same data every call. Layers
    that read the very same input tensor in every calibration call (q/k/v) get one basis tensor and one
    SharedProjection. A first pass finds those groups and counts tokens; then each distinct input's float64 Gram
    matrix (d_in^2 x 8 bytes) is accumulated in as many passes as it takes to hold at most `gram_bytes` of them at
    once (a larger single matrix gets a pass of its own), each basis formed as soon as its pass ends. Returns
    (name, layer) pairs. Raises ValueError, before the model changes, if rank exceeds a layer's d_in or its
    calibration token count, or gram_bytes is not an int >= 1."""
    gram_bytes = check_count("gram_bytes", gram_bytes, 1, hint=" (bytes of Gram matrices held at once)")
    layers = target_linears(model, targets)
    rank = check_rank(layers, rank)
    tokens = [0] * len(layers)
    leader = [None] * len(layers)  # the first layer (in execution order) that read this layer's input, every call
    last = {"x": lambda: None, "leader": None}

    def find_groups(i):
        def hook(module, args):
            x = args[0]
            first = last["leader"] if last["x"]() is x else i
            leader[i] = first if leader[i] in (None, first) else i  # a layer that ever reads another input: its own
            last.update(x=weakref.ref(x), leader=first)
            tokens[i] += x.numel() // x.shape[-1]
        return hook

    _calibrate(layers, calibration, find_groups)
    for i, (name, m) in enumerate(layers):
        if tokens[i] < rank:
            raise ValueError(f"rank {rank} is larger than the {tokens[i]} calibration tokens layer {name!r} saw")
    owner = [leader[i] if leader[i] is not None and leader[leader[i]] == leader[i] else i for i in range(len(layers))]
    passes, held = [[]], 0  # the distinct inputs (their owners) whose Gram matrices one pass accumulates
    for i in sorted(set(owner)):
        size = layers[i][1].in_features ** 2 * 8
        if passes[-1] and held + size > gram_bytes:
            passes.append([])
            held = 0
        passes[-1].append(i)
        held += size
    bases = {}
    for group in passes:
        grams = dict.fromkeys(group)

        def accumulate(i):
            if i not in grams:
                return None

            def hook(module, args):
                flat = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                grams[i] = flat.T @ flat if grams[i] is None else grams[i] + flat.T @ flat
            return hook

        _calibrate(layers, calibration, accumulate)
        for i in group:
            device = next(iter(list(layers[i][1].parameters()) + list(layers[i][1].buffers()))).device
            bases[i] = (gram_basis(grams.pop(i), rank).to(device), SharedProjection())
    wrapped = []
    for i, (name, m) in enumerate(layers):
        layer = ZOActLinear(m, *bases[owner[i]])
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        wrapped.append((name, layer))
    return wrapped


class CoefficientPerturbation:
    """Evaluates closures with every layer's coefficients at C + scale z(seed, stream, tensor id = position):
    one multi-tensor perturbed_copy_ into scratch copies of the C's (d_out x r floats per layer), which the
    layers read in place of C while the closure runs. C itself is never written, and no module hooks run.
    `params`: the C's, in tensor-id order."""

    def __init__(self, layers: Sequence[ZOActLinear], *, backend: str = "auto"):
        self.layers = list(layers)
        self.params = [layer.coeff for layer in self.layers]
        self.backend = backend
        self._scratch: List[torch.Tensor] = []

    def loss(self, closure, *, seed: int, stream: int = 0, scale: float) -> float:
        coeffs = [p.data for p in self.params]
        if [(s.shape, s.device) for s in self._scratch] != [(c.shape, c.device) for c in coeffs]:
            self._scratch = [torch.empty_like(c) for c in coeffs]
        ops.perturbed_copy_(self._scratch, coeffs, seed=seed, scale=scale, stream=stream,
                            tensor_ids=list(range(len(coeffs))), backend=self.backend)
        for layer, scratch in zip(self.layers, self._scratch):
            layer.perturbed_coeff = scratch
        try:
            return evaluate_closure(closure)
        finally:
            for layer in self.layers:
                layer.perturbed_coeff = None


def zoact_step(perturbation: CoefficientPerturbation, closure, *, seed: int, eps: float,
               inner: torch.optim.Optimizer, backend: str = "auto") -> StepResult:
    """MeZO's estimate on the coefficients: l+- = L(C +- eps z), g = (l+ - l-) / (2 eps); each C gets
    grad = g z (z regenerated, tensor id = its position) and `inner` (Adam, SGD, ...) takes one step."""
    loss_plus = perturbation.loss(closure, seed=seed, stream=0, scale=eps)
    loss_minus = perturbation.loss(closure, seed=seed, stream=0, scale=-eps)
    if not finite(loss_plus, loss_minus):
        return StepResult(loss=float("nan"), projected_grad=[float("nan")], forward_passes=2, skipped=True, seed=seed)
    g = (loss_plus - loss_minus) / (2.0 * eps)
    params = perturbation.params
    grads = [torch.zeros_like(p) for p in params]
    ops.combine_(grads, seed=seed, coeffs=[g], streams=[0], tensor_ids=list(range(len(params))), backend=backend)
    for p, grad in zip(params, grads):  # grad = g z for every C: one multi-tensor launch, not a normal() per layer
        p.grad = grad
    inner.step()
    for p in params:
        p.grad = None
    return StepResult(loss=0.5 * (loss_plus + loss_minus), projected_grad=[g], forward_passes=2, skipped=False,
                      seed=seed)
