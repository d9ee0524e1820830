"""Evaluating a loss on perturbed weights, and applying the update, for the ZO step functions.

PerturbedEvaluator runs closure() on theta + scale * z(seed, stream) in one of two modes:
- "exact" (default): the stored weights are never written while evaluating. A global module forward pre-hook
  fills a scratch buffer with perturbed_copy_(scratch, theta) just before a module runs and swaps it in
  (param.data); the forward hook swaps the stored tensor back. The module that does so is the outermost one
  whose parameters (recursively) fit in max_scratch_elements (default: 1/16 of all parameters, at least the
  largest one), e.g. a whole decoder layer, else the module that holds the parameter itself: one launch per
  layer, and scratch memory of about one layer. A parameter must be used inside the forward of a module that
  holds it (true of torch.nn and transformers layers, tied weights included); one that never is gets a
  warning, since it was evaluated unperturbed.
- "inplace": MeZO's scheme: theta itself is moved along z with round-to-nearest adds (perturb_/combine_), and
  the restore is folded into the update pass. In bf16/fp16 the restore is inexact (bench/results and README
  give the measured drift); it stays for comparison and for code that evaluates outside module forwards.

The update theta += sum_k coeffs_g[k] z(seed, streams[k]) is one combine_ pass per parameter group, with
stochastic rounding by default (unbiased in bf16/fp16), or on fp32 master weights (then copied to theta).
"""
import dataclasses
import math
import numbers
import warnings
from typing import List, Optional, Sequence

import torch

from .. import ops

MODES = ("exact", "inplace")
_MASK64 = (1 << 64) - 1


def step_seed(base_seed: int, step: int) -> int:
    """The deterministic seed of step `step` (a SplitMix64 hash: distinct steps get unrelated Philox keys)."""
    x = (base_seed + (step + 1) * 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclasses.dataclass
class StepResult:
    """What one ZO step saw: the loss it reports, its estimate, and whether it was skipped (NaN/inf loss)."""
    loss: float
    projected_grad: List[float]  # MeZO: [g]; BSZO: the posterior mean mu (k values)
    forward_passes: int
    skipped: bool
    seed: int
    noise_var: Optional[float] = None  # BSZO: the observation-noise variance sigma_e^2 after this step


def check_count(name: str, value, low: int, high: Optional[int] = None, hint: str = "") -> int:
    """An int setting (a rank, k, a step count) in [low, high]; ValueError "<name> must be an int >= low"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value > high):
        raise ValueError(f"{name} must be an int >= {low}{hint}, got {value!r}")
    return int(value)


def check_loss(value) -> float:
    """The closure's loss as a Python float; refuses non-scalars and losses that carry autograd history."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"closure() must return a scalar loss, got a tensor of shape {tuple(value.shape)}")
        if value.requires_grad:
            raise ValueError("closure() returned a loss that requires grad: a zeroth-order closure runs the forward "
                             "only (no backward); zokernels runs it under torch.no_grad()")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"closure() must return a scalar loss (0-d tensor or float), got {type(value).__name__}")
    return float(value)


def evaluate_closure(closure) -> float:
    """closure() under torch.no_grad(), its loss checked by check_loss; a closure that calls backward() is
    refused with a ValueError that says so."""
    with torch.no_grad():
        try:
            out = closure()
        except RuntimeError as exc:
            if "does not require grad" in str(exc):
                raise ValueError("closure() called backward(): a zeroth-order closure runs the forward only and "
                                 "returns the loss") from exc
            raise
    return check_loss(out)


class _ScratchPool:
    """Reused scratch tensors, one free list per (dtype, device, numel)."""

    def __init__(self):
        self.free = {}

    def take(self, like: torch.Tensor) -> torch.Tensor:
        stack = self.free.get((like.dtype, like.device, like.numel()))
        flat = stack.pop() if stack else torch.empty(like.numel(), dtype=like.dtype, device=like.device)
        return flat.view(like.shape)

    def give(self, t: torch.Tensor):
        self.free.setdefault((t.dtype, t.device, t.numel()), []).append(t.view(-1))


class PerturbedEvaluator:
    """Evaluates closures on perturbed parameters and applies updates (see the module docstring).

    groups: lists of parameters (the optimizer's param groups); tensor_ids follow their order across groups.
    masters: None, or one fp32 tensor (or None for fp32 parameters) per parameter in that order.
    """

    def __init__(self, groups: Sequence[Sequence[torch.Tensor]], *, mode: str = "exact",
                 masters: Optional[List[Optional[torch.Tensor]]] = None, backend: str = "auto",
                 max_scratch_elements: Optional[int] = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "inplace" and masters is not None:
            raise ValueError("fp32 master weights need mode='exact' (inplace mode moves the stored weights themselves)")
        self.groups = [list(g) for g in groups]
        self.params = [p for g in self.groups for p in g]
        self.mode, self.backend = mode, backend
        self.masters = masters
        self.index = {id(p): i for i, p in enumerate(self.params)}
        total = sum(p.numel() for p in self.params)
        largest = max((p.numel() for p in self.params), default=0)
        self.max_scratch_elements = max(largest, total // 16) if max_scratch_elements is None else max_scratch_elements
        self._owned_by_module = {}
        self._pool = _ScratchPool()
        self._swapped = {}
        self._seen = set()
        self._active = None  # (seed, stream, scale) of the running evaluation
        self._inplace = None  # inplace mode: (seed, stream, scale) currently applied to the weights
        self._warned = False

    def source(self, i):
        """What perturbed copies and updates read: the fp32 master where there is one, else the parameter."""
        if self.masters is not None and self.masters[i] is not None:
            return self.masters[i]
        return self.params[i].data

    # -- evaluation ------------------------------------------------------------------------------------------
    def loss(self, closure, *, seed: int = 0, stream: int = 0, scale: float = 0.0) -> float:
        """closure() evaluated at theta + scale * z(seed, stream), under torch.no_grad(); returns a float
        (NaN/inf are returned, not raised: the step functions skip such steps)."""
        if self.mode == "inplace":
            self._move_inplace(seed, stream, scale)
            try:
                return evaluate_closure(closure)
            except BaseException:
                self.discard()  # a refused or failing closure leaves the weights restored
                raise
        if scale == 0.0:
            return evaluate_closure(closure)
        self._active, self._seen = (seed, stream, scale), set()
        pre = torch.nn.modules.module.register_module_forward_pre_hook(self._pre_hook)
        post = torch.nn.modules.module.register_module_forward_hook(self._post_hook, always_call=True)
        try:
            value = evaluate_closure(closure)
        finally:
            pre.remove()
            post.remove()
            self._restore_all()
            self._active = None
        self._warn_unseen()
        return value

    def _owned(self, module):
        """The parameters this module swaps in: all of its (recursive) ones if they fit the scratch budget, else
        the ones it holds itself."""
        owned = self._owned_by_module.get(id(module))
        if owned is None:
            nested = [self.index[id(p)] for p in module.parameters() if id(p) in self.index]
            if sum(self.params[i].numel() for i in nested) > self.max_scratch_elements:
                nested = [self.index[id(p)] for p in module._parameters.values() if p is not None and id(p) in self.index]
            owned = self._owned_by_module[id(module)] = nested
        return owned

    def _pre_hook(self, module, args):
        todo = []
        for i in self._owned(module):
            if i in self._swapped:
                self._swapped[i][1] += 1  # already swapped in by a running module (a parent, or a tied weight)
            else:
                todo.append(i)
        if not todo:
            return
        seed, stream, scale = self._active
        bufs = [self._pool.take(self.params[i]) for i in todo]
        ops.perturbed_copy_(bufs, [self.source(i) for i in todo], seed=seed, scale=scale, stream=stream,
                            tensor_ids=todo, backend=self.backend)
        for i, buf in zip(todo, bufs):
            p = self.params[i]
            self._swapped[i] = [p.data, 1, buf]
            p.data = buf
            self._seen.add(i)

    def _post_hook(self, module, args, output):
        for i in self._owned(module):
            entry = self._swapped.get(i)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] == 0:
                self._unswap(i)

    def _unswap(self, i):
        stored, _, buf = self._swapped.pop(i)
        self.params[i].data = stored
        self._pool.give(buf)

    def _restore_all(self):
        for i in list(self._swapped):
            self._unswap(i)

    def _warn_unseen(self):
        unseen = [i for i in range(len(self.params)) if i not in self._seen]
        if unseen and not self._warned:
            self._warned = True
            shapes = ", ".join(f"#{i} {tuple(self.params[i].shape)}" for i in unseen[:8])
            warnings.warn(f"zokernels exact evaluation: {len(unseen)} parameter(s) ({shapes}{', ...' if len(unseen) > 8 else ''}) "
                          "were not used inside the forward of a module that owns them, so they were evaluated "
                          "unperturbed; if they matter to the loss, use mode='inplace'", RuntimeWarning, stacklevel=4)

    def _move_inplace(self, seed, stream, scale):
        """inplace mode: move the weights from the applied perturbation to scale * z(seed, stream) in one pass."""
        coeffs, streams = [], []
        if self._inplace is not None:
            old_seed, old_stream, old_scale = self._inplace
            if old_seed != seed:
                raise RuntimeError("inplace evaluation: restore or update before changing the seed")
            coeffs, streams = [-old_scale], [old_stream]
        if scale != 0.0:
            if streams and streams[0] == stream:
                coeffs[0] += scale
            else:
                coeffs, streams = coeffs + [scale], streams + [stream]
        if coeffs and any(c != 0.0 for c in coeffs):
            ops.combine_([p.data for p in self.params], seed=seed, coeffs=coeffs, streams=streams,
                         tensor_ids=list(range(len(self.params))), backend=self.backend)
        self._inplace = (seed, stream, scale) if scale != 0.0 else None

    # -- update ----------------------------------------------------------------------------------------------
    def discard(self):
        """Undo the inplace perturbation without an update (a skipped step); nothing to do in exact mode."""
        if self.mode == "inplace" and self._inplace is not None:
            self._move_inplace(self._inplace[0], 0, 0.0)

    def update(self, *, seed: int, streams: Sequence[int], group_coeffs: Sequence[Sequence[float]],
               decay: Sequence[float], rounding: str):
        """theta_g = (theta_g + sum_k group_coeffs[g][k] z(seed, streams[k])) * (1 - decay[g]): one combine_ pass
        per group (the inplace restore folded in), on the fp32 masters when there are any."""
        restore = None
        if self.mode == "inplace" and self._inplace is not None:
            if self._inplace[0] != seed:
                raise RuntimeError("inplace evaluation: the update must use the seed of the evaluations")
            restore = self._inplace
        streams = list(streams)
        base = 0
        for g, params in enumerate(self.groups):
            idx = list(range(base, base + len(params)))
            base += len(params)
            coeffs = [float(c) for c in group_coeffs[g]]
            extra = streams
            if restore is not None:
                if restore[1] in streams:
                    coeffs[streams.index(restore[1])] -= restore[2]
                else:
                    coeffs, extra = coeffs + [-restore[2]], streams + [restore[1]]
            targets = [self.source(i) for i in idx]
            if targets and any(c != 0.0 for c in coeffs):
                ops.combine_(targets, seed=seed, coeffs=coeffs, streams=extra, tensor_ids=idx, rounding=rounding,
                             rounding_seed=seed, backend=self.backend)
            if decay[g] != 0.0:  # an extra pass, rounded to nearest (exact only on fp32 weights or masters)
                for t in targets:
                    t.mul_(1.0 - decay[g])
            if self.masters is not None:
                for i in idx:
                    if self.masters[i] is not None:
                        self.params[i].data.copy_(self.masters[i])
        self._inplace = None


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)
