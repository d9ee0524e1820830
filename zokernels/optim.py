"""torch.optim-style ZO optimizers: thin state holders around the step functions of zokernels.zo.

MeZO and BSZO take parameters; AGZO and ZOAct take the model (they work on its linear layers).

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
from .ops import _check_tensors
from .zo import (GRAM_BYTES, MODES, CoefficientPerturbation, LowRankPerturbation, PerturbedEvaluator, agzo_step,
                 attach, bszo_step, check_count, mezo_step, step_seed, target_linears, zoact_step)

ROUNDINGS = ("stochastic", "nearest")


def _positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
            value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _check_settings(*, lr, eps, weight_decay, seed, rounding) -> float:
    """The settings every ZO optimizer shares; returns eps as a float."""
    _positive("lr", lr, allow_zero=True)
    _positive("weight_decay", weight_decay, allow_zero=True)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < C.MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return _positive("eps", eps)


class _ZOOptimizer(torch.optim.Optimizer):
    """Shared by every ZO optimizer: validation, the seed schedule, skipped steps, state_dict."""

    def __init__(self, params, *, lr, eps, weight_decay, seed, rounding, backend):
        self.eps = _check_settings(lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, rounding=rounding)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.rounding, self.backend = rounding, backend
        self._check_params()
        self._zo = {"step": 0, "seed": int(seed), "skipped": 0, "forward_passes": 0}
        self.last_result = None

    def _all_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def _check_params(self):
        params = self._all_params()
        if not params:
            raise ValueError("the optimizer got no parameters")
        _check_tensors("params", params, label=lambda i: f"parameter #{i}", kind="parameters")
        for g in self.param_groups:
            _positive("lr", g["lr"], allow_zero=True)
            _positive("weight_decay", g["weight_decay"], allow_zero=True)

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
        result = self._method_step(closure, seed)
        self._zo["step"] += 1
        self._zo["forward_passes"] += result.forward_passes
        if result.skipped:
            self._zo["skipped"] += 1
            warnings.warn(f"{type(self).__name__}: step {self._zo['step'] - 1} skipped, a loss was NaN or inf "
                          f"({self._zo['skipped']} skipped so far); the weights are unchanged", RuntimeWarning,
                          stacklevel=2)
        self.last_result = result
        return result.loss

    def _method_step(self, closure, seed):
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True):
        """Nothing to do: ZO optimizers use no gradients."""

    def _extra_state(self) -> dict:
        """Method state beyond torch's per-parameter state (saved under state_dict()["zo"])."""
        return {}

    def _load_extra_state(self, extra: dict):
        pass

    def state_dict(self):
        out = super().state_dict()
        out["zo"] = dict(self._zo, extra=self._extra_state())
        return out

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        zo = dict(state_dict.pop("zo"))
        extra = zo.pop("extra")
        self._load_extra_state(extra)
        super().load_state_dict(state_dict)
        self._zo = zo


class _ParameterSpaceZO(_ZOOptimizer):
    """MeZO and BSZO: perturbations of the parameters themselves, evaluated by a PerturbedEvaluator."""

    def __init__(self, params, *, lr, eps, weight_decay, seed, mode, rounding, master_weights, backend):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if master_weights and mode != "exact":
            raise ValueError("master_weights=True needs mode='exact'")
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, rounding=rounding,
                         backend=backend)
        self.mode, self.master_weights = mode, bool(master_weights)
        self._masters = [p.detach().float().clone() if master_weights and p.dtype != torch.float32 else None
                         for p in self._all_params()]
        self._evaluator = None

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if getattr(self, "_masters", None) is not None:  # after construction: validate and give it masters
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

    def _extra_state(self):
        return {"masters": [None if m is None else m.clone() for m in self._masters]}

    def _load_extra_state(self, extra):
        masters = extra["masters"]
        if len(masters) != len(self._masters) or any((a is None) != (b is None) for a, b in zip(masters, self._masters)):
            raise ValueError("state_dict's master weights do not match this optimizer's parameters and master_weights")
        for dst, src in zip(self._masters, masters):
            if dst is not None:
                dst.copy_(src)
        self._evaluator = None

    def _lrs_and_decays(self):
        return [g["lr"] for g in self.param_groups], [g["weight_decay"] for g in self.param_groups]


class MeZO(_ParameterSpaceZO):
    """MeZO (two forward passes per step): zokernels.zo.mezo_step on the param groups.

    lr, weight_decay: per group. eps: perturbation scale (> 0). mode: "exact" (default; weights never written
    while evaluating) or "inplace" (MeZO's perturb/restore). rounding of the update: "stochastic" (default) or
    "nearest". master_weights: keep fp32 copies of bf16/fp16 parameters and update those.
    """

    def __init__(self, params, lr, eps=1e-3, weight_decay=0.0, *, seed=0, mode="exact", rounding="stochastic",
                 master_weights=False, backend="auto"):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, mode=mode, rounding=rounding,
                         master_weights=master_weights, backend=backend)

    def _method_step(self, closure, seed):
        lrs, decays = self._lrs_and_decays()
        return mezo_step(self.evaluator(), closure, seed=seed, eps=self.eps, lrs=lrs, weight_decays=decays,
                         rounding=self.rounding)


class BSZO(_ParameterSpaceZO):
    """BSZO, Algorithm 1 of arXiv 2601.01452 (k + 1 forward passes per step): zokernels.zo.bszo_step.

    k: subspace dimension (directions per step, >= 1; paper default 2). eps: paper default 1e-4.
    prior_var: sigma_p^2 of the N(0, sigma_p^2 I) prior on the projected gradient; noise_var: the initial
    observation-noise variance sigma_e^2, adapted before every observation from its residual (eq. 13) with rate
    alpha in (0, 1] and floored at noise_floor * (initial noise_var). "auto" (both): n / 1e6 for n trained
    parameters, the authors' code's default (the paper states none). extra_observations: m - k re-observations
    of the most uncertain axis from cached differences (paper default m = k + 1; no extra forward pass).
    adaptive_noise=False: fixed sigma_e^2 (the paper's ablation). Other arguments as MeZO.
    """

    def __init__(self, params, lr, eps=1e-4, k=2, weight_decay=0.0, *, prior_var="auto", noise_var="auto", alpha=0.1,
                 extra_observations=1, adaptive_noise=True, noise_floor=0.01, seed=0, mode="exact",
                 rounding="stochastic", master_weights=False, backend="auto"):
        check_count("k", k, 1, high=C.MAX_STREAM, hint=" (directions per step)")
        for name, value in (("prior_var", prior_var), ("noise_var", noise_var)):
            if value != "auto":
                _positive(name, value)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        check_count("extra_observations", extra_observations, 0)
        _positive("noise_floor", noise_floor, allow_zero=True)
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, mode=mode, rounding=rounding,
                         master_weights=master_weights, backend=backend)
        auto = sum(p.numel() for p in self._all_params()) / 1e6
        self.k, self.alpha = int(k), float(alpha)
        self.prior_var = auto if prior_var == "auto" else float(prior_var)
        initial_noise = auto if noise_var == "auto" else float(noise_var)
        self.extra_observations, self.adaptive_noise = int(extra_observations), bool(adaptive_noise)
        self.noise_floor = float(noise_floor) * initial_noise
        self._zo["noise_var"] = initial_noise

    @property
    def noise_var(self) -> float:
        return self._zo["noise_var"]

    def _method_step(self, closure, seed):
        lrs, decays = self._lrs_and_decays()
        result = bszo_step(self.evaluator(), closure, seed=seed, eps=self.eps, k=self.k, lrs=lrs, weight_decays=decays,
                           prior_var=self.prior_var, noise_var=self._zo["noise_var"], alpha=self.alpha,
                           extra_observations=self.extra_observations, adaptive_noise=self.adaptive_noise,
                           noise_floor=self.noise_floor, rounding=self.rounding)
        self._zo["noise_var"] = result.noise_var
        return result


class AGZO(_ZOOptimizer):
    """AGZO (two forward passes per step: L(theta), then the perturbed loss) on `model`: zokernels.zo.agzo_step.

    rank: r of each targeted layer's activation basis (<= d_in and <= the tokens a layer sees; paper: 1).
    targets: "all" (every linear except a weight-tied head), "attention", or a regex / list of module names.
    power_iters: power-iteration steps of the basis (paper: 3). refresh_every: recompute the bases every this
    many steps (in the step's unperturbed pass; 1 = every step, as the paper). full_parameter: also train the
    other trainable parameters (biases, norms, embeddings) with Gaussian perturbations, as the paper does;
    False trains the targeted linear weights only. One param group (lr), so lr schedulers apply. cuda_graphs:
    compute the bases of CUDA activations by CUDA-graph replays (the same values with fewer host launches; a
    shape is captured on its second sight, and at most 8 are kept, least recently used dropped first, each with
    an input buffer of 2 (bf16) or 4 tokens d_in bytes; zo.subspace.BasisGraphs).
    """

    def __init__(self, model, lr, eps=1e-3, rank=1, *, targets="all", power_iters=3, refresh_every=1,
                 full_parameter=True, seed=0, rounding="stochastic", backend="auto", cuda_graphs=True):
        check_count("refresh_every", refresh_every, 1)
        check_count("power_iters", power_iters, 0)
        if not isinstance(cuda_graphs, bool):
            raise TypeError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
        layers = target_linears(model, targets)
        for name, m in layers:
            if not isinstance(getattr(m, "weight", None), torch.Tensor):
                raise ValueError(f"AGZO updates weights: layer {name!r} ({type(m).__name__}) has no weight tensor")
        self.perturbation = LowRankPerturbation(layers, rank, power_iters=int(power_iters), backend=backend,
                                                cuda_graphs=cuda_graphs)
        targeted = {id(m.weight) for _, m in layers}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in targeted] if full_parameter else []
        super().__init__([m.weight for _, m in layers] + others, lr=lr, eps=eps, weight_decay=0.0, seed=seed,
                         rounding=rounding, backend=backend)
        self.rank = self.perturbation.rank
        self.refresh_every, self.full_parameter = int(refresh_every), bool(full_parameter)
        self._dense = PerturbedEvaluator([others], backend=backend) if others else None

    @property
    def bases(self):
        return self.perturbation.bases

    def _method_step(self, closure, seed):
        refresh = self._zo["step"] % self.refresh_every == 0 or any(b is None for b in self.perturbation.bases)
        return agzo_step(self.perturbation, closure, seed=seed, eps=self.eps, lr=self.param_groups[0]["lr"],
                         refresh=refresh, dense=self._dense, rounding=self.rounding)

    def _extra_state(self):
        return {"bases": [None if b is None else b.clone() for b in self.perturbation.bases]}

    def _load_extra_state(self, extra):
        bases = extra["bases"]
        if len(bases) != len(self.perturbation.bases):
            raise ValueError(f"state_dict has {len(bases)} bases, this optimizer targets {len(self.perturbation.bases)} layers")
        self.perturbation.bases = [None if b is None else b.clone() for b in bases]


class ZOAct(_ZOOptimizer):
    """ZO-Act on `model`: replaces the targeted linear layers by ZOActLinear (bases from calibration passes:
    calibration() runs the model on calibration data, the same data every call), then trains only their
    coefficient matrices with MeZO's estimate fed to an inner optimizer ("adam" or "sgd"). The base layers
    (possibly quantized) are never written.

    rank, targets: as AGZO. gram_bytes: the float64 Gram matrices held at once while calibrating (zoact.attach;
    a smaller budget costs more calibration passes). lr, betas, weight_decay: of the inner optimizer. `layers`:
    the (name, ZOActLinear) pairs; `merge()` folds W0 + C V^T into plain torch.nn.Linear bases and returns the
    model's layers to them.
    """

    def __init__(self, model, lr, eps=1e-3, rank=16, *, calibration, targets="all", inner="adam",
                 betas=(0.9, 0.999), weight_decay=0.0, seed=0, backend="auto", gram_bytes=GRAM_BYTES):
        # everything is checked before attach() changes the model (attach checks rank and targets itself)
        _check_settings(lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, rounding="nearest")
        if inner not in ("adam", "sgd"):
            raise ValueError(f"inner must be 'adam' or 'sgd', got {inner!r}")
        if not callable(calibration):
            raise ValueError("calibration must be a callable that runs the model's forward on calibration data")
        self.model = model
        self.layers = attach(model, calibration, rank=rank, targets=targets, gram_bytes=gram_bytes)
        coeffs = [layer.coeff for _, layer in self.layers]
        super().__init__(coeffs, lr=lr, eps=eps, weight_decay=weight_decay, seed=seed, rounding="nearest",
                         backend=backend)
        self.rank = self.layers[0][1].basis.shape[1]
        make = torch.optim.Adam if inner == "adam" else torch.optim.SGD
        kwargs = dict(lr=lr, weight_decay=weight_decay, **({"betas": betas} if inner == "adam" else {}))
        self.inner = make(coeffs, **kwargs)
        self._perturbation = CoefficientPerturbation([layer for _, layer in self.layers], backend=backend)

    def _method_step(self, closure, seed):
        for group in self.inner.param_groups:  # lr schedulers act on this optimizer's group
            group["lr"] = self.param_groups[0]["lr"]
        return zoact_step(self._perturbation, closure, seed=seed, eps=self.eps, inner=self.inner, backend=self.backend)

    def _extra_state(self):
        return {"inner": self.inner.state_dict()}

    def _load_extra_state(self, extra):
        self.inner.load_state_dict(extra["inner"])

    def merge(self, *, rounding="stochastic", rounding_seed=0):
        """Fold every layer's W0 + C V^T into its base weight and put the base layers back into the model."""
        for name, layer in self.layers:
            base = layer.merge(rounding=rounding, rounding_seed=rounding_seed, backend=self.backend)
            parent_name, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent_name) if parent_name else self.model, child, base)
        return self.model
