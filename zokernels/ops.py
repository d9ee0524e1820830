"""Public ops: validate everything once, then dispatch to a backend. Nothing is written before validation ends.

All ops work in place on lists of contiguous float32/float16/bfloat16 tensors of one device, compute in
float32 and round once per element when storing ("nearest": round-to-nearest-even; "stochastic": unbiased,
bits from the reserved stream of the counter contract). Element i of tensor t in direction k draws
z(seed, streams[k], tensor_ids[t], offsets[t] + i) as defined in zokernels.contract.
"""
import logging
import math
import numbers
from typing import Optional, Sequence, Union

import torch

from . import backends
from . import contract as C

log = logging.getLogger("zokernels")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TensorList = Union[torch.Tensor, Sequence[torch.Tensor]]
Coeffs = Union[Sequence[float], torch.Tensor]


def _describe(name, i, t):
    return _with_layout(f"{name}[{i}]", t)


def _with_layout(label, t):
    return f"{label} (shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device})"


def _as_list(name, tensors):
    if isinstance(tensors, torch.Tensor):
        return [tensors]
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{name} must be a tensor or a list/tuple of tensors, got {type(tensors).__name__}")
    out = list(tensors)
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] is a {type(t).__name__}, not a torch.Tensor")
    return out


def _check_tensors(name, tensors, device=None, *, label=None, kind="tensors"):
    """Every tensor float32/float16/bfloat16, on one device (`device`, default the first tensor's) and contiguous;
    returns that device. Errors name tensor i as label(i) (default name[i]) with its shape, dtype and device."""
    label = label or (lambda i: f"{name}[{i}]")
    for i, t in enumerate(tensors):
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{_with_layout(label(i), t)}: dtype must be float32, float16 or bfloat16")
        if device is None:
            device = t.device
        if t.device != device:
            raise ValueError(f"{_with_layout(label(i), t)} is not on {device} like {label(0)}: all {kind} must share "
                             "one device")
        if not t.is_contiguous():
            raise ValueError(f"{_with_layout(label(i), t)} is not contiguous (strides {t.stride()}): pass a contiguous "
                             "tensor")
    return device


def _span(t):
    start = t.data_ptr()
    return start, start + t.nbytes


def _check_no_overlap(name, tensors, allowed=None):
    """No two tensors may share memory, except pairs (i, j) for which allowed(i, j) is true (symmetric)."""
    spans = sorted((*_span(t), i) for i, t in enumerate(tensors) if t.numel() > 0)
    end = 0  # one pass first: where every span starts at or after the ends of all earlier ones, nothing overlaps
    for a0, a1, _ in spans:
        if a0 < end:
            break
        end = max(end, a1)
    else:
        return
    active = []  # (end, index) of the spans that start earlier and may still overlap the next one
    for a0, a1, i in spans:
        active = [(b1, j) for b1, j in active if b1 > a0]
        for _, j in active:
            if not (allowed and allowed(j, i)):
                raise ValueError(f"{name}[{min(i, j)}] and {name}[{max(i, j)}] overlap in memory: an in-place "
                                 f"update needs disjoint tensors")
        active.append((a1, i))


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not lo <= value < hi:
        raise ValueError(f"{name}={value} is outside [{lo}, {hi})")
    return value


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} is not finite")
    return value


def _check_seeds(seed, rounding_seed):
    """(seed, rounding_seed) checked; the rounding seed defaults to the seed."""
    seed = _check_int("seed", seed, 0, C.MAX_SEED)
    return seed, seed if rounding_seed is None else _check_int("rounding_seed", rounding_seed, 0, C.MAX_SEED)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def _per_tensor_ints(name, values, n, lo, hi, default):
    if values is None:
        return [default(i) for i in range(n)]
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, torch.Tensor)):
        raise TypeError(f"{name} must be a sequence of ints (one per tensor), got {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} tensors")
    return [_check_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(values)]


def _check_coeffs(coeffs, device):
    if isinstance(coeffs, torch.Tensor):
        if coeffs.dim() != 1 or coeffs.numel() == 0:
            raise ValueError(f"coeffs must be a non-empty 1-D tensor, got shape {tuple(coeffs.shape)} (K = 0 directions?)")
        if not coeffs.is_floating_point():
            raise TypeError(f"coeffs tensor has dtype {coeffs.dtype}: it must be floating point")
        if coeffs.device != device:
            raise ValueError(f"coeffs tensor is on {coeffs.device}, the tensors on {device}")
        return coeffs.to(torch.float32).contiguous()
    if isinstance(coeffs, (str, bytes)) or not isinstance(coeffs, Sequence):
        raise TypeError(f"coeffs must be a sequence of numbers or a 1-D tensor, got {type(coeffs).__name__}")
    if len(coeffs) == 0:
        raise ValueError("coeffs is empty: K must be at least 1")
    return [_check_real(f"coeffs[{k}]", c) for k, c in enumerate(coeffs)]


def _check_streams(streams, k):
    streams = list(range(k)) if streams is None else list(streams)
    if len(streams) != k:
        raise ValueError(f"streams has {len(streams)} entries for {k} coeffs")
    return [_check_int(f"streams[{j}]", s, 0, C.MAX_STREAM) for j, s in enumerate(streams)]


def _run(dsts, srcs, *, seed, coeffs, streams, tensor_ids, offsets, dist, rounding, rounding_seed, backend):
    """Shared validation and dispatch of perturb_, combine_ and perturbed_copy_. srcs is None for in place."""
    seed, rounding_seed = _check_seeds(seed, rounding_seed)
    _check_choice("dist", dist, C.DISTRIBUTIONS)
    _check_choice("rounding", rounding, C.ROUNDINGS)
    device = _check_tensors("tensors", dsts)
    if device is None:  # an empty list: nothing to write once the arguments are known to be valid
        _check_choice("backend", backend, ("auto", *backends.names()))
        return None
    if srcs is not None:
        _check_tensors("src", srcs, device)
        for i, (d, s) in enumerate(zip(dsts, srcs)):
            if d.shape != s.shape:
                raise ValueError(f"{_describe('dst', i, d)} and {_describe('src', i, s)} differ in shape")
        n = len(dsts)
        both = dsts + srcs
        alias = lambda i, j: (j - i == n or i - j == n) and _span(both[i]) == _span(both[j]) and both[i].dtype == both[j].dtype  # noqa: E731
        _check_no_overlap("dst+src", both, alias)
    else:
        _check_no_overlap("tensors", dsts)
    coeffs = _check_coeffs(coeffs, device)
    streams = _check_streams(streams, len(coeffs))
    tensor_ids = _per_tensor_ints("tensor_ids", tensor_ids, len(dsts), 0, C.MAX_TENSOR_ID, lambda i: i)
    offsets = _per_tensor_ints("offsets", offsets, len(dsts), 0, C.MAX_INDEX, lambda i: 0)
    for i, (t, off) in enumerate(zip(dsts, offsets)):
        if off + t.numel() > C.MAX_INDEX:
            raise ValueError(f"offsets[{i}] + numel of {_describe('tensors', i, t)} exceeds 2**62")
    name = backends.resolve(backend, device, backends.op_class(dist, rounding, len(coeffs)))
    log.debug("zokernels: %d tensors on %s -> backend %s", len(dsts), device, name)
    with torch.no_grad():
        backends.load(name).combine(dsts, srcs, seed=seed, coeffs=coeffs, streams=streams, tensor_ids=tensor_ids,
                                    offsets=offsets, dist=dist, rounding=rounding, rounding_seed=rounding_seed)
    return name


def perturb_(tensors: TensorList, *, seed: int, scale: float, stream: int = 0, tensor_ids=None, offsets=None,
             dist: str = "gaussian", rounding: str = "nearest", rounding_seed: Optional[int] = None,
             backend: str = "auto") -> str:
    """In place: t += scale * z(seed, stream, tensor_ids[i]) for every tensor t = tensors[i].

    tensors: contiguous float32/float16/bfloat16 tensors of one device (one launch per dtype on a GPU).
    tensor_ids default to list positions, offsets (index of element 0 in the unsharded tensor) to 0.
    Returns the name of the backend that ran (None for an empty list).
    """
    return _run(_as_list("tensors", tensors), None, seed=seed, coeffs=[_check_real("scale", scale)], streams=[stream],
                tensor_ids=tensor_ids, offsets=offsets, dist=dist, rounding=rounding, rounding_seed=rounding_seed,
                backend=backend)


def combine_(tensors: TensorList, *, seed: int, coeffs: Coeffs, streams=None, tensor_ids=None, offsets=None,
             dist: str = "gaussian", rounding: str = "nearest", rounding_seed: Optional[int] = None,
             backend: str = "auto") -> str:
    """In place, one pass over memory: t += sum_k coeffs[k] * z(seed, streams[k], tensor_ids[i]).

    coeffs: K >= 1 numbers, or a 1-D float tensor on the tensors' device (read on the device, no host sync:
    if it holds NaN/inf no tensor is written; a Python sequence with NaN/inf raises). streams default to
    0..K-1, each in [0, 2**31). Returns the name of the backend that ran.
    """
    return _run(_as_list("tensors", tensors), None, seed=seed, coeffs=coeffs, streams=streams, tensor_ids=tensor_ids,
                offsets=offsets, dist=dist, rounding=rounding, rounding_seed=rounding_seed, backend=backend)


def perturbed_copy_(dst: TensorList, src: TensorList, *, seed: int, scale: float, stream: int = 0, tensor_ids=None,
                    offsets=None, dist: str = "gaussian", rounding: str = "nearest",
                    rounding_seed: Optional[int] = None, backend: str = "auto") -> str:
    """dst[i] = src[i] + scale * z(seed, stream, tensor_ids[i]); src is only read (dst[i] may be src[i] itself).

    dst and src: equal-length lists of same-shape tensors on one device; dtypes may differ (e.g. an fp32
    master into a bf16 buffer). Returns the name of the backend that ran.
    """
    dsts, srcs = _as_list("dst", dst), _as_list("src", src)
    if len(dsts) != len(srcs):
        raise ValueError(f"dst has {len(dsts)} tensors, src has {len(srcs)}")
    return _run(dsts, srcs, seed=seed, coeffs=[_check_real("scale", scale)], streams=[stream], tensor_ids=tensor_ids,
                offsets=offsets, dist=dist, rounding=rounding, rounding_seed=rounding_seed, backend=backend)


MAX_RANK = 128  # the low-rank kernels hold a [rows, r] tile in registers


def _check_lowrank(i, weight, basis, factor, device):
    """Shapes, dtypes, devices and layout of the i-th (weight, basis, factor) of a low-rank op; returns r."""
    shapes = []
    for name, t in (("weights", weight), ("bases", basis), ("factors", factor)):
        if t is None:
            continue
        shape = t.shape
        if len(shape) != 2:
            raise ValueError(f"{name}[{i}] must be 2-D, got shape {tuple(shape)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name}[{i}] (shape {tuple(shape)}) has dtype {t.dtype}: float32, float16 or bfloat16")
        if t.device != device:
            raise ValueError(f"{name}[{i}] is on {t.device}, weights[0] on {device}: one device")
        if not t.is_contiguous():
            raise ValueError(f"{name}[{i}] (shape {tuple(shape)}) is not contiguous")
        shapes.append(shape)
    (d_out, d_in), (basis_rows, r) = shapes[:2]
    if basis_rows != d_in:
        raise ValueError(f"bases[{i}] has shape {tuple(basis.shape)}: it must be (d_in, r) = ({d_in}, r) for "
                         f"weights[{i}] {tuple(weight.shape)}")
    if not 1 <= r <= MAX_RANK:
        raise ValueError(f"bases[{i}] rank r = {r} must be in [1, {MAX_RANK}]")
    if factor is not None and tuple(factor.shape) != (d_out, r):
        raise ValueError(f"factors[{i}] has shape {tuple(factor.shape)}, expected (d_out, r) = ({d_out}, {r})")
    if d_in >= 2**31:
        raise ValueError(f"weights[{i}] has d_in = {d_in}: the low-rank kernels need d_in < 2**31")
    if factor is None and d_out * r > C.MAX_INDEX:
        raise ValueError(f"weights[{i}]: d_out * r exceeds the contract's index range")
    return r


def _lowrank_run(weights, bases, factors, *, seed, coeffs, streams, tensor_ids, rounding, rounding_seed, backend):
    """Shared validation and dispatch of lowrank_combine_ (factors None) and lowrank_add_."""
    seed, rounding_seed = _check_seeds(seed, rounding_seed)
    _check_choice("rounding", rounding, C.ROUNDINGS)
    weights, bases = _as_list("weights", weights), _as_list("bases", bases)
    if factors is not None:
        factors = _as_list("factors", factors)
    for name, ts in (("bases", bases), ("factors", factors)):
        if ts is not None and len(ts) != len(weights):
            raise ValueError(f"{name} has {len(ts)} tensors for {len(weights)} weights")
    _check_choice("backend", backend, ("auto", *backends.names()))
    if not weights:
        return None
    device = weights[0].device
    ranks = [_check_lowrank(i, w, v, None if factors is None else factors[i], device)
             for i, (w, v) in enumerate(zip(weights, bases))]
    inputs = bases + (factors or [])
    n = len(weights)
    _check_no_overlap("weights+inputs", weights + inputs, lambda i, j: i >= n and j >= n)  # inputs may share memory
    tensor_ids = _per_tensor_ints("tensor_ids", tensor_ids, n, 0, C.MAX_TENSOR_ID, lambda i: i)
    if factors is None:
        coeffs = _check_coeffs(coeffs, device)
        streams = _check_streams(streams, len(coeffs))
    k = 1 if factors is not None else len(coeffs)
    if backend == "auto":
        name = backends.resolve("auto", device, backends.lowrank_class(rounding, k, max(ranks)))
    else:
        name = backends.resolve(backend, device)
    module = backends.load(name)
    log.debug("zokernels: low-rank op on %d weights (ranks %s) on %s -> backend %s", n, sorted(set(ranks)), device, name)
    with torch.no_grad():
        module.lowrank_combine(weights, bases, factors=factors, seed=seed, coeffs=coeffs, streams=streams,
                               tensor_ids=tensor_ids, rounding=rounding, rounding_seed=rounding_seed)
    return name


def lowrank_combine_(weights: TensorList, bases: TensorList, *, seed: int, coeffs: Coeffs, streams=None,
                     tensor_ids=None, rounding: str = "nearest", rounding_seed: Optional[int] = None,
                     backend: str = "auto") -> Optional[str]:
    """In place, one pass over each weight: W_t += (sum_k coeffs[k] N_{t,k}) V_t^T for every W_t = weights[t].

    weights: contiguous [d_out, d_in] tensors of one device (a tensor or a list; one launch per dtype and rank
    bucket on a GPU); bases V_t: contiguous [d_in, r_t], 1 <= r_t <= 128 (any float dtype, read as fp32;
    the product's precision per backend and weight dtype is backends.load(name).lowrank_product_error), and
    may share memory with each other. N_{t,k}: the [d_out, r_t] Gaussian matrix whose
    element (i, j) is index i * r_t + j of stream streams[k] (default 0..K-1) under (seed, tensor_ids[t]),
    regenerated in the kernel, never stored; the sum over k is taken before the rank-r product. tensor_ids
    default to list positions; coeffs as in combine_. Stochastic rounding draws the words of each weight's
    own row-major element indices under rounding_seed (default seed). Returns the backend that ran (None for
    an empty list).
    """
    return _lowrank_run(weights, bases, None, seed=seed, coeffs=coeffs, streams=streams, tensor_ids=tensor_ids,
                        rounding=rounding, rounding_seed=rounding_seed, backend=backend)


def lowrank_add_(weights: TensorList, factors: TensorList, bases: TensorList, *, tensor_ids=None,
                 rounding: str = "nearest", rounding_seed: int = 0, backend: str = "auto") -> Optional[str]:
    """In place, one pass over each weight: W_t += F_t V_t^T with explicit factors F_t [d_out, r_t] (e.g.
    ZO-Act's merge of W0 + C B: F = C, V = B^T). Lists and rounding as lowrank_combine_ (stochastic bits
    under rounding_seed and tensor_ids[t])."""
    return _lowrank_run(weights, bases, factors, seed=0, coeffs=None, streams=None, tensor_ids=tensor_ids,
                        rounding=rounding, rounding_seed=rounding_seed, backend=backend)


def lowrank_perturbation(x: torch.Tensor, basis: torch.Tensor, out_features: int, *, seed: int, scale: float,
                         stream: int = 0, tensor_id: int = 0, backend: str = "auto") -> torch.Tensor:
    """float32 [..., out_features]: scale * (x V) N^T, the output change of a linear layer whose weight moves by
    scale * N V^T (N [out_features, r] as in lowrank_combine_: element (i, j) is index i * r + j of `stream`),
    without forming or writing the weight. x: [..., d_in]; basis V: [d_in, r]."""
    scale = _check_real("scale", scale)
    n = _perturbation_factor(x, basis, out_features, seed, stream, tensor_id, backend)
    return lowrank_delta(x, basis, n, scale=scale)


def _perturbation_factor(x, basis, out_features, seed, stream, tensor_id, backend):
    """N [out_features, r] float32 of `stream` (lowrank_combine_'s contract), after checking x against basis."""
    if not isinstance(x, torch.Tensor) or not isinstance(basis, torch.Tensor):
        raise TypeError("x and basis must be torch.Tensors")
    if basis.dim() != 2 or x.dim() < 1 or x.shape[-1] != basis.shape[0]:
        raise ValueError(f"x has shape {tuple(x.shape)} and basis {tuple(basis.shape)}: need x [..., d_in], basis [d_in, r]")
    if x.device != basis.device:
        raise ValueError(f"x is on {x.device}, basis on {basis.device}: one device")
    n = _stream(out_features * basis.shape[1], seed, stream, tensor_id, 0, x.device, "gaussian", backend)
    return n.view(out_features, basis.shape[1])


def lowrank_project(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """float32 [..., r]: x V for x [..., d_in], V = basis [d_in, r] (the first factor of every low-rank output
    change; layers that read one input through one basis can compute it once)."""
    return x.float() @ basis.float()


def split_basis(basis: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[d_in, 2 r] in dtype (bf16 or fp16): V's leading part V_hi = V rounded to dtype, then V_lo = (V - V_hi)
    rounded, side by side, so that V_hi + V_lo equals V to about twice dtype's significant bits (2^-16 relative in
    bf16). The operand of lowrank_project_split; a fixed basis is split once."""
    basis = basis.float()
    hi = basis.to(dtype)
    return torch.cat([hi, (basis - hi.float()).to(dtype)], dim=1)


def mm_float32_output(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether torch.mm(a, b, out_dtype=torch.float32) runs for CUDA operands of `dtype` (bf16 or fp16) here
    (PyTorch's mm.dtype: 16-bit products summed and written in float32). Asked once per device and dtype."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return False
    key = (device, dtype)
    if key not in _MM_FLOAT32_OUTPUT:
        try:
            a = torch.ones(2, 2, dtype=dtype, device=device)
            _MM_FLOAT32_OUTPUT[key] = torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
        except (RuntimeError, TypeError, NotImplementedError):
            _MM_FLOAT32_OUTPUT[key] = False
    return _MM_FLOAT32_OUTPUT[key]


_MM_FLOAT32_OUTPUT = {}


def lowrank_project_split(x: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """float32 [..., r]: x (V_hi + V_lo) for a 16-bit CUDA x [..., d_in] and split = split_basis(V, x.dtype): one
    16-bit GEMM with float32 sums and output (mm_float32_output must hold), reading x as stored instead of a float32
    copy of it; within about 2^-16 of lowrank_project (relative to sum |x| |V|, bf16)."""
    r = split.shape[1] // 2
    both = torch.mm(x.reshape(-1, x.shape[-1]), split, out_dtype=torch.float32)
    return (both[:, :r] + both[:, r:]).reshape(*x.shape[:-1], r)


def lowrank_delta(x: torch.Tensor, basis: torch.Tensor, factor: torch.Tensor, *, scale: float,
                  xv: Optional[torch.Tensor] = None) -> torch.Tensor:
    """float32 [..., d_out]: scale * (x V) F^T for x [..., d_in], V = basis [d_in, r], F = factor [d_out, r] (one
    device; shapes as lowrank_perturbation, which calls this with F = N). For callers that draw every layer's N
    in one launch (AGZO) and hand each layer its own. xv: lowrank_project(x, basis) where the caller already
    has it (layers fed one input share it)."""
    scale, xv = _check_delta(x, basis, factor, scale, xv)
    delta = xv @ factor.float().T
    return delta if scale == 1.0 else scale * delta  # (callers that pre-scale F skip one pass over the output)


def lowrank_delta_add_(output: torch.Tensor, x: torch.Tensor, basis: torch.Tensor, factor: torch.Tensor, *,
                       scale: float, xv: Optional[torch.Tensor] = None, backend: str = "auto") -> str:
    """In place: output += scale * (x V) F^T, the sum taken in float32 and rounded once into output's dtype.
    output: [..., d_out] (x's leading shape, any float dtype, x's device); the rest as lowrank_delta. Backends:
    the reference (torch ops: addcmul_ at r = 1, no [..., d_out] temporary; else the product added; autograd
    records it); "triton" and "cuda": one fused launch over a contiguous float32/bf16/fp16 output that autograd
    does not record (else ValueError). "auto": the backend bench/bench_delta_add.py measured fastest for the
    device and rank class (auto_choices.json), the reference where that cannot take the output. Checked before
    output is written. Returns the backend that ran."""
    scale, xv = _check_delta(x, basis, factor, scale, xv)
    if (not isinstance(output, torch.Tensor) or output.dim() != x.dim() or output.shape[-1] != factor.shape[0]
            or output.shape[:-1] != x.shape[:-1]):
        raise ValueError(f"output has shape {tuple(getattr(output, 'shape', ()))}: need "
                         f"{(*x.shape[:-1], factor.shape[0])} (x's leading shape, d_out)")
    if not output.is_floating_point() or output.device != x.device:
        raise ValueError(f"output is {output.dtype} on {output.device}: need a float tensor on x's device {x.device}")
    name = backends.resolve(backend, output.device, backends.delta_add_class(factor.shape[1]))
    factor = factor.float()
    recorded = torch.is_grad_enabled() and any(t.requires_grad for t in (output, xv, factor))
    fusable = output.is_contiguous() and not recorded and output.dtype in SUPPORTED_DTYPES
    if name == "reference" or (backend == "auto" and not fusable):
        backends.load("reference").lowrank_delta_add(output, xv, factor, scale)
        return "reference"
    if not fusable:
        raise ValueError(f"lowrank_delta_add_ on the {name} backend needs a contiguous float32, bf16 or fp16 output "
                         f"and no operand that autograd records (output {output.dtype}, contiguous: "
                         f"{output.is_contiguous()}, recorded: {recorded})")
    d_out, r = factor.shape  # 2-d views and contiguous operands, made only where they are not already
    flat_xv = xv if xv.dim() == 2 and xv.is_contiguous() else xv.reshape(-1, r).contiguous()
    backends.load(name).lowrank_delta_add(output if output.dim() == 2 else output.view(-1, d_out), flat_xv,
                                          factor if factor.is_contiguous() else factor.contiguous(), scale)
    return name


def _check_delta(x, basis, factor, scale, xv):
    """(scale, xv) for lowrank_delta and lowrank_delta_add_, after checking their shapes; xv computed if None.
    (Called once per linear layer and perturbed pass: plain comparisons, messages built only on failure.)"""
    scale = _check_real("scale", scale)
    if basis.dim() != 2 or factor.dim() != 2 or x.shape[-1] != basis.shape[0] or factor.shape[1] != basis.shape[1]:
        raise ValueError(f"x {tuple(x.shape)}, basis {tuple(basis.shape)}, factor {tuple(factor.shape)}: need "
                         "x [..., d_in], basis [d_in, r], factor [d_out, r]")
    device = x.device
    if basis.device != device or factor.device != device or (xv is not None and xv.device != device):
        operands = dict(x=x, basis=basis, factor=factor, **({} if xv is None else dict(xv=xv)))
        raise ValueError("the operands are on different devices (" + ", ".join(f"{k} on {t.device}" for k, t in
                                                                         operands.items()) + "): need one device")
    if xv is None:
        xv = lowrank_project(x, basis)
    elif (xv.dtype != torch.float32 or xv.dim() != x.dim() or xv.shape[-1] != basis.shape[1]
          or xv.shape[:-1] != x.shape[:-1]):
        raise ValueError(f"xv has shape {tuple(xv.shape)} and dtype {xv.dtype}: it must be lowrank_project(x, basis), "
                         f"float32 {(*x.shape[:-1], basis.shape[1])}")
    return scale, xv


def lowrank_perturbed_linear(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor, bias=None, *, seed: int,
                             scale: float, stream: int = 0, tensor_id: int = 0, backend: str = "auto") -> torch.Tensor:
    """y = x W^T + b + scale * (x V) N^T = x (W + scale N V^T)^T + b, in x's dtype (the low-rank term added in
    float32 into the linear's output, rounded once), W never written (the exact, weight-preserving evaluation of
    a low-rank perturbation; AGZO's forward)."""
    scale = _check_real("scale", scale)
    n = _perturbation_factor(x, basis, weight.shape[0], seed, stream, tensor_id, backend)
    y = torch.nn.functional.linear(x, weight, bias)
    lowrank_delta_add_(y, x, basis, n, scale=scale)  # auto: fused where autograd does not record y, else reference
    return y


def _stream(n, seed, stream, tensor_id, offset, device, dist, backend):
    n = _check_int("n", n, 0, C.MAX_INDEX)
    seed = _check_int("seed", seed, 0, C.MAX_SEED)
    stream = _check_int("stream", stream, 0, C.MAX_STREAM)
    tensor_id = _check_int("tensor_id", tensor_id, 0, C.MAX_TENSOR_ID)
    offset = _check_int("offset", offset, 0, C.MAX_INDEX - n)
    device = torch.device("cpu") if device is None else torch.device(device)
    name = backends.resolve(backend, device, backends.op_class(dist, "nearest", 1))
    return backends.load(name).stream_values(n, seed=seed, stream=stream, tensor_id=tensor_id, offset=offset,
                                             dist=dist, device=device)


def normal(n: int, *, seed: int, stream: int = 0, tensor_id: int = 0, offset: int = 0, device=None,
           backend: str = "auto") -> torch.Tensor:
    """float32 [n]: the Gaussian stream z(seed, stream, tensor_id, i) for i in [offset, offset + n)."""
    return _stream(n, seed, stream, tensor_id, offset, device, "gaussian", backend)


def rademacher(n: int, *, seed: int, stream: int = 0, tensor_id: int = 0, offset: int = 0, device=None,
               backend: str = "auto") -> torch.Tensor:
    """float32 [n] of +-1: the Rademacher stream for i in [offset, offset + n)."""
    return _stream(n, seed, stream, tensor_id, offset, device, "rademacher", backend)


def backend_for(device, backend: str = "auto", *, dist: str = "gaussian", rounding: str = "nearest", k: int = 1) -> str:
    """The backend an op (distribution, rounding, K directions) would run on tensors of `device`."""
    return backends.resolve(backend, torch.device(device), backends.op_class(dist, rounding, k))
