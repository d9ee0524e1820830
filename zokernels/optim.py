"""torch.optim-style ZO optimizers: thin state holders around the step functions of zokernels.zo.

    opt = zokernels.optim.MeZO(model.parameters(), lr=1e-6, eps=1e-3)
    loss = opt.step(closure)        # closure() runs a forward pass and returns the scalar loss (no backward)

Param groups carry lr and weight_decay; eps, the seed and the method's settings are per optimizer. Step t uses
the seed zo.step_seed(seed, t), so a run is reproducible, and state_dict() / load_state_dict() resume it bit
for bit (step count, seed, BSZO's noise variance, fp32 master weights, skipped-step count).
"""
import math
import numbers
import warnings

import torch

from . import contract as C
from .ops import SUPPORTED_DTYPES
from .zo import MODES, PerturbedEvaluator, bszo_step, mezo_step, step_seed

ROUNDINGS = ("stochastic", "nearest")


def _positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
            value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


class _ZOOptimizer(torch.optim.Optimizer):
    """Shared by MeZO and BSZO: validation, the evaluator, the seed schedule, state_dict and skipped steps."""

    def __init__(self, params, *, lr, eps, weight_decay, seed, mode, rounding, master_weights, backend):
        _positive("lr", lr, allow_zero=True)
        _positive("weight_decay", weight_decay, allow_zero=True)
        self.eps = _positive("eps", eps)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < C.MAX_SEED:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        if master_weights and mode != "exact":
            raise ValueError("master_weights=True needs mode='exact'")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.mode, self.rounding, self.backend, self.master_weights = mode, rounding, backend, bool(master_weights)
        self._check_params()
        self._masters = [p.detach().float().clone() if master_weights and p.dtype != torch.float32 else None
                         for p in self._all_params()]
        self._zo = {"step": 0, "seed": int(seed), "skipped": 0, "forward_passes": 0}
        self._evaluator = None
        self.last_result = None

    def _all_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def _check_params(self):
        params = self._all_params()
        if not params:
            raise ValueError("the optimizer got no parameters")
        device = params[0].device
        for i, p in enumerate(params):
            where = f"parameter #{i} (shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"
            if p.dtype not in SUPPORTED_DTYPES:
                raise TypeError(f"{where}: dtype must be float32, float16 or bfloat16")
            if p.device != device:
                raise ValueError(f"{where} is not on {device} like parameter #0: all parameters must share one device")
            if not p.is_contiguous():
                raise ValueError(f"{where} is not contiguous")
        for g in self.param_groups:
            _positive("lr", g["lr"], allow_zero=True)
            _positive("weight_decay", g["weight_decay"], allow_zero=True)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if getattr(self, "_zo", None) is not None:  # after construction: validate and give it masters
            self._check_params()
            self._masters += [p.detach().float().clone() if self.master_weights and p.dtype != torch.float32 else None
                              for p in param_group["params"]]
            self._evaluator = None

    def evaluator(self) -> PerturbedEvaluator:
        if self._evaluator is None:
            masters = self._masters if self.master_weights else None
            self._evaluator = PerturbedEvaluator([g["params"] for g in self.param_groups], mode=self.mode,
                                                 masters=masters, backend=self.backend)
        return self._evaluator

    @property
    def steps(self) -> int:
        return self._zo["step"]

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because a loss was NaN or inf (the weights were left bit-exact)."""
        return self._zo["skipped"]

    @property
    def forward_passes(self) -> int:
        return self._zo["forward_passes"]

    @torch.no_grad()
    def step(self, closure=None):
        """One ZO step; closure() runs a forward pass on the current batch and returns the scalar loss.
        Returns the step's loss as a float (NaN for a skipped step)."""
        if closure is None or not callable(closure):
            raise ValueError(f"{type(self).__name__}.step needs a closure that runs the forward pass and returns "
                             "the loss")
        self._check_params()
        seed = step_seed(self._zo["seed"], self._zo["step"])
        lrs = [g["lr"] for g in self.param_groups]
        decays = [g["weight_decay"] for g in self.param_groups]
        result = self._method_step(self.evaluator(), closure, seed, lrs, decays)
        self._zo["step"] += 1
        self._zo["forward_passes"] += result.forward_passes
        if result.skipped:
            self._zo["skipped"] += 1
            warnings.warn(f"{type(self).__name__}: step {self._zo['step'] - 1} skipped, a loss was NaN or inf "
                          f"({self._zo['skipped']} skipped so far); the weights are unchanged", RuntimeWarning,
                          stacklevel=2)
        self.last_result = result
        return result.loss

    def _method_step(self, evaluator, closure, seed, lrs, decays):
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True):
        """Nothing to do: ZO optimizers use no gradients."""

    def state_dict(self):
        out = super().state_dict()
        out["zo"] = dict(self._zo, masters=[None if m is None else m.clone() for m in self._masters])
        return out

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        zo = dict(state_dict.pop("zo"))
        masters = zo.pop("masters")
        if len(masters) != len(self._masters) or any((a is None) != (b is None) for a, b in zip(masters, self._masters)):
            raise ValueError("state_dict's master weights do not match this optimizer's parameters and master_weights")
        super().load_state_dict(state_dict)
        for dst, src in zip(self._masters, masters):
            if dst is not None:
                dst.copy_(src)
        self._zo = zo
        self._evaluator = None


class MeZO(_ZOOptimizer):
    """MeZO (two forward passes per step): zokernels.zo.mezo_step on the param groups.

    lr, weight_decay: per group. eps: perturbation scale (> 0). mode: "exact" (default; weights never written
    while evaluating) or "inplace" (MeZO's perturb/restore). rounding of the update: "stochastic" (default) or
    "nearest". master_weights: keep fp32 copies of bf16/fp16 parameters and update those.
    """

    def __init__(self, params, lr, eps=1e-3, weight_decay=0.0, *, seed=0, mode="exact", rounding="stochastic",
                 master_weights=False, backend="auto"):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, mode=mode, rounding=rounding,
                         master_weights=master_weights, backend=backend)

    def _method_step(self, evaluator, closure, seed, lrs, decays):
        return mezo_step(evaluator, closure, seed=seed, eps=self.eps, lrs=lrs, weight_decays=decays,
                         rounding=self.rounding)


class BSZO(_ZOOptimizer):
    """BSZO (k + 1 forward passes per step): zokernels.zo.bszo_step; docs/algorithms.md has the equations.

    k: subspace dimension (directions per step, >= 1). prior_var: sigma_p^2 of the N(0, sigma_p^2 I) prior.
    noise_var: the initial observation-noise variance sigma_e^2 (adapted every step from the residual with
    rate alpha in (0, 1]). extra_observations: re-observations of the most uncertain direction from cached
    differences (m = k + extra_observations measurements, no extra forward pass). Other arguments as MeZO.
    """

    def __init__(self, params, lr, eps=1e-3, k=2, weight_decay=0.0, *, prior_var=1.0, noise_var=1.0, alpha=0.1,
                 extra_observations=1, seed=0, mode="exact", rounding="stochastic", master_weights=False,
                 backend="auto"):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 or k > C.MAX_STREAM:
            raise ValueError(f"k must be an int >= 1 (directions per step), got {k!r}")
        _positive("prior_var", prior_var)
        _positive("noise_var", noise_var)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if isinstance(extra_observations, bool) or not isinstance(extra_observations, numbers.Integral) or \
                extra_observations < 0:
            raise ValueError(f"extra_observations must be an int >= 0, got {extra_observations!r}")
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, mode=mode, rounding=rounding,
                         master_weights=master_weights, backend=backend)
        self.k, self.prior_var, self.alpha = int(k), float(prior_var), float(alpha)
        self.extra_observations = int(extra_observations)
        self._zo["noise_var"] = float(noise_var)

    @property
    def noise_var(self) -> float:
        return self._zo["noise_var"]

    def _method_step(self, evaluator, closure, seed, lrs, decays):
        result = bszo_step(evaluator, closure, seed=seed, eps=self.eps, k=self.k, lrs=lrs, weight_decays=decays,
                           prior_var=self.prior_var, noise_var=self._zo["noise_var"], alpha=self.alpha,
                           extra_observations=self.extra_observations, rounding=self.rounding)
        self._zo["noise_var"] = result.noise_var
        return result
