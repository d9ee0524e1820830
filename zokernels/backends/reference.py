"""Reference backend: the counter contract in plain torch, on any device. The oracle for every other backend.

Philox runs in int64 tensors (32-bit words held in [0, 2**32)); normals are computed in float64 and rounded
once to float32. It is written for clarity, not speed, and allocates freely.
"""
import math

import torch

from .. import contract as C

NAME = "reference"


def unavailable_reason(device: torch.device):
    return None  # any device torch can compute on


def _mulhilo(a: torch.Tensor, m: int):
    """(hi32, lo32) of a * m for int64 tensors a in [0, 2**32) and a 32-bit constant m, without overflow."""
    p0 = a * (m & 0xFFFF)  # < 2**48
    p1 = a * (m >> 16)  # < 2**48
    mid = p1 + (p0 >> 16)  # a * m == mid * 2**16 + (p0 & 0xFFFF)
    return mid >> 16, ((mid & 0xFFFF) << 16) | (p0 & 0xFFFF)


def philox4x32_10(c0, c1, c2, c3, seed: int):
    """Philox4x32-10 (Random123) on int64 tensors of 32-bit words; key = split_seed(seed). Returns x0..x3."""
    k0, k1 = C.split_seed(seed)
    like = next(c for c in (c0, c1, c2, c3) if isinstance(c, torch.Tensor))
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64, device=like.device).expand_as(like) for c in (c0, c1, c2, c3))
    for _ in range(C.PHILOX_ROUNDS):
        hi0, lo0 = _mulhilo(c0, C.PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, C.PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + C.PHILOX_W0) & C.MASK32, (k1 + C.PHILOX_W1) & C.MASK32
    return c0, c1, c2, c3


def _unit_words(n, offset, unit, stream, tensor_id, seed, device):
    """Words of the Philox calls covering elements [offset, offset + n), as an int64 tensor [units, 4],
    and the position of element `offset` inside the first unit."""
    first, last = offset // unit, (offset + n - 1) // unit
    units = torch.arange(first, last + 1, dtype=torch.int64, device=device)
    words = philox4x32_10(units & C.MASK32, units >> 32, stream, tensor_id, seed)
    return torch.stack(words, dim=1), offset - first * unit


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return ((x >> 9) * 2 + 1).to(torch.float64) * 2.0**-24


def stream_values(n: int, *, seed: int, stream: int, tensor_id: int, offset: int, dist: str, device) -> torch.Tensor:
    """The float32 values z[offset : offset + n] of the contract's stream."""
    if n == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    unit = C.unit_of(dist)
    words, skip = _unit_words(n, offset, unit, stream, tensor_id, seed, device)
    if dist == "gaussian":
        u = _uniform(words)
        r02 = torch.sqrt(-2.0 * torch.log(u[:, 0]))
        r13 = torch.sqrt(-2.0 * torch.log(u[:, 2]))
        a1, a3 = 2.0 * math.pi * u[:, 1], 2.0 * math.pi * u[:, 3]
        z = torch.stack([r02 * torch.cos(a1), r02 * torch.sin(a1), r13 * torch.cos(a3), r13 * torch.sin(a3)], dim=1)
        z = z.to(torch.float32).reshape(-1)
    else:
        bits = (words[:, :, None] >> torch.arange(32, device=device)) & 1  # [units, word, bit]
        z = (bits.reshape(-1) * 2 - 1).to(torch.float32)
    return z[skip : skip + n]


def rounding_words(n: int, *, seed: int, tensor_id: int, offset: int, device) -> torch.Tensor:
    """Stochastic-rounding words (int64 in [0, 2**32)) for elements [offset, offset + n): the contract's 16 random
    bits of each element as the word's top half, the low half zero."""
    words, skip = _unit_words(n, offset, C.ROUNDING_UNIT, C.SR_STREAM, tensor_id, seed, device)
    halves = torch.stack([(words & 0xFFFF) << 16, words & 0xFFFF0000], dim=2)  # [units, word, half]
    return halves.reshape(-1)[skip : skip + n]


def round_stochastic(v: torch.Tensor, dtype: torch.dtype, r: torch.Tensor) -> torch.Tensor:
    """Unbiased rounding of float32 v to `dtype` using random words r (int64 in [0, 2**32); the contract's
    words carry 16 random bits in their top half).

    bf16: add the top 16 random bits to the 16 bits that bf16 drops, then truncate.
    fp16 normal range: the same with 13 bits. fp16 subnormals (|v| < 2**-14) live on a uniform grid of
    2**-24: round up when the top 24 bits of r, as a fraction, fall below v's fractional part on that grid.
    Every intermediate is exact, so E[result] = v: exactly for bf16 and fp16 normals, and to within 2**-16 of
    the grid spacing for fp16 subnormals (16 random bits resolve the fraction to 2**-16).
    """
    if dtype == torch.float32:
        return v
    bits = v.view(torch.int32)
    if dtype == torch.bfloat16:
        out = ((bits + (r >> 16).to(torch.int32)) & -65536).view(torch.float32)
    else:
        normal = ((bits + (r >> 19).to(torch.int32)) & -8192).view(torch.float32)
        s = v.abs() * 2.0**24
        fl = torch.floor(s)
        up = ((r >> 8).to(torch.float32) * 2.0**-24) < (s - fl)
        sub = torch.copysign((fl + up.to(torch.float32)) * 2.0**-24, v)
        out = torch.where(v.abs() < 2.0**-14, sub, normal)
    return torch.where(torch.isnan(v), v, out).to(dtype)


def combine(dsts, srcs, *, seed, coeffs, streams, tensor_ids, offsets, dist, rounding, rounding_seed):
    """dst_t = round(src_t + sum_k coeffs[k] * z(seed, streams[k], tensor_ids[t])) for every tensor t.

    coeffs: a list of floats or a float32 tensor on the tensors' device (then, if any entry is not finite,
    nothing is written). srcs: None for in place. Validation is the caller's (ops.py).
    """
    device = dsts[0].device
    if isinstance(coeffs, torch.Tensor):
        coeff_vals = coeffs.to(device=device, dtype=torch.float32)
        finite = torch.isfinite(coeff_vals).all()
    else:
        coeff_vals, finite = [torch.tensor(c, dtype=torch.float32) for c in coeffs], None
    for t, dst in enumerate(dsts):
        if dst.numel() == 0:
            continue
        src = dst if srcs is None else srcs[t]
        n, tid, off = dst.numel(), tensor_ids[t], offsets[t]
        acc = src.reshape(-1).to(torch.float32)
        for k, stream in enumerate(streams):
            z = stream_values(n, seed=seed, stream=stream, tensor_id=tid, offset=off, dist=dist, device=device)
            acc = acc + coeff_vals[k].to(device) * z
        if rounding == "stochastic":
            r = rounding_words(n, seed=rounding_seed, tensor_id=tid, offset=off, device=device)
            out = round_stochastic(acc, dst.dtype, r)
        else:
            out = acc.to(dst.dtype)
        out = out.view(dst.shape)
        if finite is not None:
            out = torch.where(finite, out, dst)
        dst.copy_(out)


def lowrank_combine(weights, bases, *, factors, seed, coeffs, streams, tensor_ids, rounding, rounding_seed):
    """For every t: weights[t] = round(weights[t] + M_t bases[t]^T), M_t = factors[t] (d_out x r) if given, else
    sum_k coeffs[k] N_{t,k} with N_{t,k} the d_out x r Gaussian matrix whose element (i, j) is index i * r + j
    of stream streams[k] (tensor_ids[t]). The product is taken in float64 and rounded once (to float32, then to
    the weight's dtype); stochastic rounding uses the words of the weight's own element indices (row-major)
    under rounding_seed."""
    for t, (weight, basis) in enumerate(zip(weights, bases)):
        _lowrank_one(weight, basis, None if factors is None else factors[t], seed=seed, coeffs=coeffs,
                     streams=streams, tensor_id=tensor_ids[t], rounding=rounding, rounding_seed=rounding_seed)


def _lowrank_one(weight, basis, factor, *, seed, coeffs, streams, tensor_id, rounding, rounding_seed):
    d_out, d_in = weight.shape
    r = basis.shape[1]
    device = weight.device
    if factor is not None:
        m = factor.to(torch.float64)
        finite = None
    else:
        if isinstance(coeffs, torch.Tensor):
            coeff_vals = coeffs.to(device=device, dtype=torch.float64)
            finite = torch.isfinite(coeff_vals).all()
        else:
            coeff_vals, finite = [float(c) for c in coeffs], None
        m = torch.zeros(d_out, r, dtype=torch.float64, device=device)
        for k, stream in enumerate(streams):
            n = stream_values(d_out * r, seed=seed, stream=stream, tensor_id=tensor_id, offset=0, dist="gaussian",
                              device=device)
            m = m + coeff_vals[k] * n.to(torch.float64).view(d_out, r)
    acc = (weight.to(torch.float64) + m @ basis.to(torch.float64).T).to(torch.float32)
    if rounding == "stochastic":
        words = rounding_words(weight.numel(), seed=rounding_seed, tensor_id=tensor_id, offset=0, device=device)
        out = round_stochastic(acc.reshape(-1), weight.dtype, words).view(d_out, d_in)
    else:
        out = acc.to(weight.dtype)
    if finite is not None:
        out = torch.where(finite, out, weight)
    weight.copy_(out)


def lowrank_delta_add(output, xv, factor, scale):
    """In place: output [..., d_out] += scale * xv [..., r] @ factor [d_out, r]^T (float32 xv and factor), the sum
    in float32 and rounded once into output's dtype; at r = 1 one addcmul_ (no [..., d_out] temporary).
    Differentiable (plain torch ops)."""
    if xv.shape[-1] == 1:
        output.addcmul_(xv, factor[:, 0], value=scale)
    else:
        output.add_(xv @ factor.T, alpha=scale)
