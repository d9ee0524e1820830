"""Triton backend: one multi-tensor kernel for perturb_, combine_, perturbed_copy_ and the raw streams.

A launch covers every tensor of one (dst dtype, src dtype) group: a host-built table of chunks (cached per
tensor list) gives each program its tensor (as an element offset from the first tensor's address), its
Philox tensor_id and its index range. Each tile regenerates one Philox call per 4 elements (gaussian) or
per 128 elements (rademacher) for each of the K directions, accumulates in fp32 registers and writes once.

On a GPU the Box-Muller special functions use the hardware approximations (lg2/sin/cos.approx); under
TRITON_INTERPRET=1 the same code runs with numpy's. Raw Philox words are bit-exact either way.
"""
import collections
import functools
import os

import torch
import triton
import triton.language as tl

from .. import contract as C
from .launch import (TableCache, chunk_spans, combine_by_dtype, direction_args, key_words, lowrank_blocks,
                     lowrank_direction_args, padded_rank, tensor_list_key, to_device)

NAME = "triton"
# Launch settings (measured on an H100: bench/results/); the environment may override them for other GPUs.
TILE = int(os.environ.get("ZOKERNELS_TRITON_TILE", 1024))  # elements per tile: a power of two >= 128
CHUNK_TILES = 64  # tiles per program (per table row)
NUM_WARPS = int(os.environ.get("ZOKERNELS_TRITON_WARPS", 4))
WIDE_MUL = True  # Philox products through mul.wide.u32 (GPU only)
K_UNROLL = 2  # unroll factor of the direction loop (H100: 2-5% faster at K=16; see bench/NOTES.md)
# ptxas register cap per thread, by rounding mode (None: the compiler's choice). H100: capping round-to-nearest
# at 56 raises occupancy and takes Gaussian perturb_ from 1.16x to 1.06x roofline; stochastic rounding only
# loses from a cap (bench/results/raw/2026-11-23_h100_v9_sweep_register_cap.json).
MAX_REGISTERS = {"nearest": 56, "stochastic": None}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unavailable_reason(device: torch.device):
    """None if this backend can run on `device`, else why not (for the error message)."""
    if device.type == "cuda":
        if interpreting():
            return "TRITON_INTERPRET is set: Triton runs CPU tensors only"
        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    if device.type == "cpu":
        return None if interpreting() else ("Triton runs CPU tensors only in its interpreter: set TRITON_INTERPRET=1 "
                                            "before importing zokernels")
    return f"Triton does not run {device.type} tensors"


# ----------------------------------------------------------------------------------------------- device code
@triton.jit
def _mulhilo(a, M: tl.constexpr, WIDE_MUL: tl.constexpr):
    """(hi32, lo32) of a * M. WIDE_MUL: one mul.wide.u32 (a single IMAD.WIDE) instead of mul.hi + mul.lo."""
    if WIDE_MUL:
        if M == 0xD2511F53:
            lo, hi = tl.inline_asm_elementwise(
                "{ .reg .u64 t; mul.wide.u32 t, $2, 0xD2511F53; mov.b64 {$0, $1}, t; }", "=r,=r,r", [a],
                dtype=(tl.uint32, tl.uint32), is_pure=True, pack=1)
        else:
            lo, hi = tl.inline_asm_elementwise(
                "{ .reg .u64 t; mul.wide.u32 t, $2, 0xCD9E8D57; mov.b64 {$0, $1}, t; }", "=r,=r,r", [a],
                dtype=(tl.uint32, tl.uint32), is_pure=True, pack=1)
    else:
        hi = tl.umulhi(a, M)
        lo = a * M
    return hi, lo


@triton.jit
def _philox4x32_10(c0, c1, c2, c3, k0, k1, WIDE_MUL: tl.constexpr = False):
    for _ in tl.static_range(10):
        hi0, lo0 = _mulhilo(c0, 0xD2511F53, WIDE_MUL)
        hi1, lo1 = _mulhilo(c2, 0xCD9E8D57, WIDE_MUL)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def _unit_words(unit0, NU: tl.constexpr, stream, tid, k0, k1, WIDE_MUL: tl.constexpr):
    """Philox words of NU consecutive counters starting at unit index unit0 (int64)."""
    g = unit0 + tl.arange(0, NU).to(tl.int64)
    return _philox4x32_10((g & 0xFFFFFFFF).to(tl.uint32), (g >> 32).to(tl.uint32), stream, tid, k0, k1, WIDE_MUL)


@triton.jit
def _uniform(x):
    # (2 * (x >> 9) + 1) * 2**-24, exactly: [1, 2) float with 23 mantissa bits, minus (1 - 2**-24).
    return ((x >> 9) | 0x3F800000).to(tl.float32, bitcast=True) - 0.999999940395355224609375


@triton.jit
def _fast_unary(x, OP: tl.constexpr, FAST: tl.constexpr):
    if FAST:
        if OP == "lg2":
            y = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
        elif OP == "sin":
            y = tl.inline_asm_elementwise("sin.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
        else:
            y = tl.inline_asm_elementwise("cos.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
    else:
        if OP == "lg2":
            y = tl.log2(x)
        elif OP == "sin":
            y = tl.sin(x)
        else:
            y = tl.cos(x)
    return y


@triton.jit
def _box_muller_scaled(xa, xb, c, FAST: tl.constexpr):
    """c * (r cos(2 pi u1), r sin(2 pi u1)) with r = sqrt(-2 ln u0), (u0, u1) = uniforms of words (xa, xb)."""
    u0 = _uniform(xa)
    u1 = _uniform(xb)
    # -2 ln(u0): near 1 the approximate lg2 has absolute (not relative) error, so below w = 1/128 use the series
    # -2 ln(1 - w) = 2w + w^2 + 2/3 w^3 + ... truncated to w (2 + w) (at most 1.3e-6 absolute in n; the CUDA
    # backend's zo_random.cuh does the same).
    w = 1.0 - u0  # exact for u0 >= 1/2
    r2 = tl.where(w < 0.0078125, w * (2.0 + w), _fast_unary(u0, "lg2", FAST) * -1.3862943611198906)
    cr = c * tl.sqrt(r2)
    angle = u1 * 6.283185307179586
    return cr * _fast_unary(angle, "cos", FAST), cr * _fast_unary(angle, "sin", FAST)


@triton.jit
def _select4(j, a0, a1, a2, a3):
    """[G] x 4 -> [G, 4] tile: element (g, j) is a_j[g] (columns are register-resident: no data movement)."""
    return tl.where(j == 0, a0[:, None], tl.where(j == 1, a1[:, None], tl.where(j == 2, a2[:, None], a3[:, None])))


@triton.jit
def _scaled_direction_tile(start, TILE: tl.constexpr, UNIT: tl.constexpr, c, stream, tid, k0, k1, FAST: tl.constexpr,
                           WIDE_MUL: tl.constexpr):
    """c * z for the TILE elements from global index `start` (a multiple of UNIT), as a [TILE // UNIT, UNIT]
    tile. UNIT 4: Gaussian (one Philox call per row); UNIT 128: Rademacher (one call per row, a bit each)."""
    x0, x1, x2, x3 = _unit_words(start // UNIT, TILE // UNIT, stream, tid, k0, k1, WIDE_MUL)
    j = tl.arange(0, UNIT)[None, :]
    if UNIT == 4:
        n0, n1 = _box_muller_scaled(x0, x1, c, FAST)
        n2, n3 = _box_muller_scaled(x2, x3, c, FAST)
        z = _select4(j, n0, n1, n2, n3)
    else:
        word = tl.where(j < 64, tl.where(j < 32, x0[:, None], x1[:, None]), tl.where(j < 96, x2[:, None], x3[:, None]))
        z = tl.where(((word >> (j & 31).to(tl.uint32)) & 1) != 0, c, -c)
    return z


@triton.jit
def _direction(k, coeff_ptr, scale, stream_ptr, stream0, COEFF_PTR: tl.constexpr, STREAM_PTR: tl.constexpr):
    """(coefficient, stream, coefficient is finite) of direction k: from device arrays, or `scale` and
    stream0 + k. A NaN coefficient fails the finiteness test too."""
    if COEFF_PTR:
        c = tl.load(coeff_ptr + k)
        c_finite = tl.abs(c) <= 3.4028234663852886e38
    else:
        c = scale
        c_finite = True
    if STREAM_PTR:
        s = tl.load(stream_ptr + k).to(tl.uint32)
    else:
        s = (stream0 + k).to(tl.uint32)
    return c, s, c_finite


@triton.jit
def _rounding_halves(x0, x1, x2, x3):
    """The stochastic-rounding words of the 8 elements of each Philox unit (words x0..x3 of any shape S), as a
    [*S, 2, 2, 2] tensor whose row-major order is element order: element 2 j + h takes half h of word j, placed
    in the top 16 bits (the contract's layout)."""
    words = tl.join(tl.join(x0, x2), tl.join(x1, x3))  # [*S, 2, 2]: word 2 a + b at [a, b]
    return tl.join(words << 16, words & 0xFFFF0000)


@triton.jit
def _rounding_words(start, TILE: tl.constexpr, UNIT: tl.constexpr, tid, rk0, rk1, WIDE_MUL: tl.constexpr):
    """Stochastic-rounding words (reserved stream 2**32 - 1) for the tile from global index `start` (a multiple
    of 8), shaped [TILE // UNIT, UNIT]."""
    x0, x1, x2, x3 = _unit_words(start // 8, TILE // 8, tl.full([], 0xFFFFFFFF, tl.uint32), tid, rk0, rk1, WIDE_MUL)
    return tl.reshape(_rounding_halves(x0, x1, x2, x3), [TILE // UNIT, UNIT])


@triton.jit
def _round_to(acc, r, DTYPE: tl.constexpr, STOCHASTIC: tl.constexpr, SOFT_BF16_RNE: tl.constexpr):
    """fp32 -> DTYPE, round-to-nearest-even or stochastic with random words r (see reference.round_stochastic).
    SOFT_BF16_RNE: round to bf16 with integer ops (Triton's interpreter truncates in its bf16 cast)."""
    if STOCHASTIC and DTYPE != tl.float32:
        bits = acc.to(tl.int32, bitcast=True)
        if DTYPE == tl.bfloat16:
            out = ((bits + (r >> 16).to(tl.int32)) & -65536).to(tl.float32, bitcast=True)
        else:
            normal = ((bits + (r >> 19).to(tl.int32)) & -8192).to(tl.float32, bitcast=True)
            s = tl.abs(acc) * 16777216.0
            fl = tl.floor(s)
            up = ((r >> 8).to(tl.float32) * 5.9604644775390625e-08) < (s - fl)
            sub = (fl + up.to(tl.float32)) * 5.9604644775390625e-08
            sub = (sub.to(tl.int32, bitcast=True) | (bits & -2147483648)).to(tl.float32, bitcast=True)  # copysign
            out = tl.where(tl.abs(acc) < 6.103515625e-05, sub, normal)
        out = tl.where(acc != acc, acc, out)
    elif SOFT_BF16_RNE and DTYPE == tl.bfloat16:
        bits = acc.to(tl.int32, bitcast=True)
        out = ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
        out = tl.where(acc != acc, acc, out)
    else:
        out = acc
    return out.to(DTYPE)


@triton.jit
def _is_interior(tile0, numel, TILE: tl.constexpr):
    """Whether the tile [tile0, tile0 + TILE) lies inside the tensor: such tiles go unmasked, since a
    per-element mask of unknown constancy would forbid vector loads and stores."""
    return (tile0 >= 0) & (tile0 + TILE <= numel)


@triton.jit
def _load_tile(base, tile0, lanes, numel, TILE: tl.constexpr):
    """fp32 tile of base[tile0 + lanes], zero outside [0, numel)."""
    local = tile0 + lanes
    if _is_interior(tile0, numel, TILE):
        x = tl.load(base + local)
    else:
        x = tl.load(base + local, mask=(local >= 0) & (local < numel), other=0.0)
    return x.to(tl.float32)


@triton.jit(do_not_specialize=["scale", "stream0", "k0", "k1", "rk0", "rk1"])
def _combine_kernel(dst_base, src_base, table, coeff_ptr, scale, stream_ptr, stream0, K, k0, k1, rk0, rk1,
                    TILE: tl.constexpr, UNIT: tl.constexpr, HAS_SRC: tl.constexpr, COEFF_PTR: tl.constexpr,
                    STREAM_PTR: tl.constexpr, STOCHASTIC: tl.constexpr, FAST: tl.constexpr, WIDE_MUL: tl.constexpr,
                    K_UNROLL: tl.constexpr,
                    A_DST: tl.constexpr, A_SRC: tl.constexpr, A_LOCAL: tl.constexpr):
    row = table + tl.program_id(0).to(tl.int64) * 7  # the 7 columns of _chunk_table
    dst_delta = tl.load(row) * A_DST
    src_delta = tl.load(row + 1) * A_SRC
    local0 = tl.load(row + 2) * A_LOCAL
    numel = tl.load(row + 3)
    offset = tl.load(row + 4)
    tid = tl.load(row + 5).to(tl.uint32)
    n_tiles = tl.load(row + 6).to(tl.int32)
    k0 = k0.to(tl.uint32)
    k1 = k1.to(tl.uint32)
    rk0 = rk0.to(tl.uint32)
    rk1 = rk1.to(tl.uint32)
    lanes = tl.arange(0, TILE // UNIT)[:, None] * UNIT + tl.arange(0, UNIT)[None, :]
    for t in tl.range(n_tiles):
        tile0 = local0 + t * TILE
        local = tile0 + lanes
        start = offset + tile0
        if HAS_SRC:
            acc = _load_tile(src_base + src_delta, tile0, lanes, numel, TILE)
        else:
            acc = tl.zeros([TILE // UNIT, UNIT], dtype=tl.float32)
        finite = True  # a device coefficient that is not finite vetoes every write (no host sync to raise)
        for k in tl.range(K, loop_unroll_factor=K_UNROLL):
            c, s, c_finite = _direction(k, coeff_ptr, scale, stream_ptr, stream0, COEFF_PTR, STREAM_PTR)
            finite = finite & c_finite
            acc += _scaled_direction_tile(start, TILE, UNIT, c, s, tid, k0, k1, FAST, WIDE_MUL)
        if STOCHASTIC:
            r = _rounding_words(start, TILE, UNIT, tid, rk0, rk1, WIDE_MUL)
        else:
            r = 0
        out = _round_to(acc, r, dst_base.dtype.element_ty, STOCHASTIC, not FAST)
        if _is_interior(tile0, numel, TILE):
            tl.store(dst_base + dst_delta + local, out, mask=finite)
        else:
            tl.store(dst_base + dst_delta + local, out, mask=(local >= 0) & (local < numel) & finite)


@triton.jit
def _words_at(u, stream, tid, k0, k1, WIDE_MUL: tl.constexpr):
    """The 4 Philox words of counter (lo32(u), hi32(u), stream, tid) for each unit index u (int64, any shape)."""
    return _philox4x32_10((u & 0xFFFFFFFF).to(tl.uint32), (u >> 32).to(tl.uint32), stream, tid, k0, k1, WIDE_MUL)


@triton.jit
def _gaussian_at(e, stream, tid, k0, k1, FAST: tl.constexpr, WIDE_MUL: tl.constexpr):
    """z at element indices e of any layout: one Philox call per element, its lane (e mod 4) selected."""
    x0, x1, x2, x3 = _words_at(e >> 2, stream, tid, k0, k1, WIDE_MUL)
    n0, n1 = _box_muller_scaled(x0, x1, 1.0, FAST)
    n2, n3 = _box_muller_scaled(x2, x3, 1.0, FAST)
    lane = e & 3
    return tl.where(lane == 0, n0, tl.where(lane == 1, n1, tl.where(lane == 2, n2, n3)))


@triton.jit
def _tile_rounding_words(rows, cols0, d_in, BM: tl.constexpr, BN: tl.constexpr, tid, rk0, rk1,
                         ALIGNED8: tl.constexpr, WIDE_MUL: tl.constexpr):
    """Stochastic-rounding words of the [BM, BN] tile of a row-major [*, d_in] matrix. ALIGNED8 (d_in and the
    tile's first column multiples of 8): one Philox call per 8 elements, else one per element."""
    srs = tl.full([], 0xFFFFFFFF, tl.uint32)
    if ALIGNED8:
        octets = cols0 + tl.arange(0, BN // 8).to(tl.int64) * 8
        x0, x1, x2, x3 = _words_at((rows[:, None] * d_in + octets[None, :]) >> 3, srs, tid, rk0, rk1, WIDE_MUL)
        words = tl.reshape(_rounding_halves(x0, x1, x2, x3), [BM, BN])
    else:
        e = rows[:, None] * d_in + (cols0 + tl.arange(0, BN).to(tl.int64))[None, :]
        x0, x1, x2, x3 = _words_at(e >> 3, srs, tid, rk0, rk1, WIDE_MUL)
        j = (e >> 1) & 3
        word = tl.where(j == 0, x0, tl.where(j == 1, x1, tl.where(j == 2, x2, x3)))
        words = tl.where((e & 1) == 0, word << 16, word & 0xFFFF0000)
    return words


@triton.jit
def _factor_tile(rows, r, R_PAD: tl.constexpr, stream, tid, k0, k1, QUAD_R: tl.constexpr, FAST: tl.constexpr,
                 WIDE_MUL: tl.constexpr):
    """N[rows, 0:R_PAD] of the low-rank contract (element (i, j) is index i * r + j), [BM, R_PAD] float32;
    columns >= r hold other rows' values (the caller masks them). QUAD_R (r a multiple of 4): one Philox call
    per 4 elements of a row, else one per element."""
    if QUAD_R:
        quads = tl.arange(0, R_PAD // 4).to(tl.int64) * 4
        x0, x1, x2, x3 = _words_at((rows[:, None] * r + quads[None, :]) >> 2, stream, tid, k0, k1, WIDE_MUL)
        n0, n1 = _box_muller_scaled(x0, x1, 1.0, FAST)
        n2, n3 = _box_muller_scaled(x2, x3, 1.0, FAST)
        n = tl.reshape(tl.join(tl.join(n0, n2), tl.join(n1, n3)), [rows.shape[0], R_PAD])
    else:
        n = _gaussian_at(rows[:, None] * r + tl.arange(0, R_PAD).to(tl.int64)[None, :], stream, tid, k0, k1, FAST,
                         WIDE_MUL)
    return n


@triton.jit
def _m_tile(rows, d_out, r, f_ptr, coeff_ptr, scale, stream_ptr, stream0, K, tid, k0, k1, BM: tl.constexpr,
            R_PAD: tl.constexpr, REGEN: tl.constexpr, COEFF_PTR: tl.constexpr, STREAM_PTR: tl.constexpr,
            QUAD_R: tl.constexpr, FAST: tl.constexpr, WIDE_MUL: tl.constexpr):
    """(M[rows, 0:R_PAD] float32, zero outside [d_out, r): sum_k c_k N_k regenerated, or the factor's rows;
    whether every coefficient is finite)."""
    j = tl.arange(0, R_PAD).to(tl.int64)
    m_mask = (rows < d_out)[:, None] & (j < r)[None, :]
    finite = True
    if REGEN:
        m = tl.zeros([BM, R_PAD], dtype=tl.float32)
        for k in tl.range(K):
            c, s, c_finite = _direction(k, coeff_ptr, scale, stream_ptr, stream0, COEFF_PTR, STREAM_PTR)
            finite = finite & c_finite
            m += c * _factor_tile(rows, r, R_PAD, s, tid, k0, k1, QUAD_R, FAST, WIDE_MUL)
        m = tl.where(m_mask, m, 0.0)
    else:
        m = tl.load(f_ptr + rows[:, None] * r + j[None, :], mask=m_mask, other=0.0).to(tl.float32)
    return m, finite


@triton.jit
def _v_tile(v_ptr, cols, d_in, r, R_PAD: tl.constexpr):
    """V[cols, 0:R_PAD] float32 [BN, R_PAD], zero outside [d_in, r)."""
    j = tl.arange(0, R_PAD).to(tl.int64)
    return tl.load(v_ptr + cols[:, None] * r + j[None, :], mask=(cols < d_in)[:, None] & (j < r)[None, :],
                   other=0.0).to(tl.float32)


@triton.jit
def _pow2_scale(amax):
    """(s, 1 / s) for amax = max|x| of a float32 tile: s the power of two with amax < s <= 2 amax (at most 2**127),
    so x / s is exact and |x / s| < 1 cannot overflow fp16; elements of magnitude >= 2**-14 s keep fp16's 11
    significant bits, smaller ones an absolute error of at most 2**-25 s. A non-finite amax gives garbage
    (the product is non-finite then anyway)."""
    e = tl.minimum((amax.to(tl.uint32, bitcast=True) >> 23) & 0xFF, 253)
    return ((e + 1) << 23).to(tl.float32, bitcast=True), ((253 - e) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _update_tile(w_ptr, row0, cols0, d_out, d_in, m, v, scale, finite, tid, rk0, rk1, BM: tl.constexpr,
                 BN: tl.constexpr, STOCHASTIC: tl.constexpr, ALIGNED8: tl.constexpr, FAST: tl.constexpr,
                 WIDE_MUL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """W[row0:row0 + BM, cols0:cols0 + BN] += scale m v^T in place, rounded to W's dtype; nothing written unless
    `finite`. m and v are fp16 (scaled) for DOT_PRECISION "fp16", else float32 and scale is 1."""
    rows = row0 + tl.arange(0, BM).to(tl.int64)
    cols = cols0 + tl.arange(0, BN).to(tl.int64)
    w_off = rows[:, None] * d_in + cols[None, :]
    w_mask = (rows < d_out)[:, None] & (cols < d_in)[None, :]
    interior = (row0 + BM <= d_out) & (cols0 + BN <= d_in)
    if DOT_PRECISION == "fp16":
        delta = tl.dot(m, tl.trans(v)) * scale
    else:
        delta = tl.dot(m, tl.trans(v), input_precision=DOT_PRECISION)
    if interior:
        acc = tl.load(w_ptr + w_off).to(tl.float32) + delta
    else:
        acc = tl.load(w_ptr + w_off, mask=w_mask, other=0.0).to(tl.float32) + delta
    if STOCHASTIC:
        words = _tile_rounding_words(rows, cols0, d_in, BM, BN, tid, rk0, rk1, ALIGNED8, WIDE_MUL)
        if w_ptr.dtype.element_ty == tl.bfloat16:
            # bf16 rounds with a word's top 16 bits: narrowed first, the words the compiler moves to the
            # product's register layout are half the bytes (1-2% on the H100: raw/2026-11-24_*narrow_words*)
            words = (words >> 16).to(tl.uint16).to(tl.uint32) << 16
    else:
        words = 0
    out = _round_to(acc, words, w_ptr.dtype.element_ty, STOCHASTIC, not FAST)
    if interior:
        tl.store(w_ptr + w_off, out, mask=finite)
    else:
        tl.store(w_ptr + w_off, out, mask=w_mask & finite)


@triton.jit(do_not_specialize=["scale", "stream0", "K", "k0", "k1", "rk0", "rk1"])
def _lowrank_kernel(w_base, v_base, f_base, table, inputs, v_amax, coeff_ptr, scale, stream_ptr, stream0, K, k0, k1,
                    rk0, rk1, BM: tl.constexpr, BN: tl.constexpr, R_PAD: tl.constexpr, REGEN: tl.constexpr,
                    COEFF_PTR: tl.constexpr, STREAM_PTR: tl.constexpr, STOCHASTIC: tl.constexpr,
                    QUAD_R: tl.constexpr, ALIGNED8: tl.constexpr, FAST: tl.constexpr, WIDE_MUL: tl.constexpr,
                    A_W: tl.constexpr, A_DIN: tl.constexpr, A_V: tl.constexpr, R_EXACT: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    """One table row (see _lowrank_table) of W_t += M V^T in place, M [d_out, r] regenerated as sum_k c_k N_k (the
    sum before the product) or loaded from the factor; inputs[t] holds the element offsets of its basis (/ A_V)
    and factor. Rows [row0, row0 + BM) of weight t: M's rows formed once, then each column tile of BN in
    [begin, end) with its rows of V. The rank is padded with zeros to R_PAD >= 16 so the product is always a
    tensor-core dot (precision: _dot_precision; for "fp16", M's tile and V scaled by powers of two, V's
    from v_amax[t] = max|V_t|, and rounded to fp16). R_EXACT: every rank of the launch is R_PAD, compiled
    as a constant (vector loads of V, no rank masks)."""
    row = table + tl.program_id(0).to(tl.int64) * 9  # the 9 columns of _lowrank_table
    w_ptr = w_base + tl.load(row) * A_W
    t = tl.load(row + 1)
    v_ptr = v_base + tl.load(inputs + 3 * t) * A_V
    f_ptr = f_base + tl.load(inputs + 3 * t + 1)
    d_out = tl.load(row + 2)
    d_in = tl.load(row + 3) * A_DIN
    if R_EXACT:
        r = R_PAD
    else:
        r = tl.load(row + 4)
    tid = tl.load(row + 5).to(tl.uint32)
    row0 = tl.load(row + 6)
    begin = tl.load(row + 7).to(tl.int32)
    end = tl.load(row + 8).to(tl.int32)
    k0, k1, rk0, rk1 = k0.to(tl.uint32), k1.to(tl.uint32), rk0.to(tl.uint32), rk1.to(tl.uint32)
    m, finite = _m_tile(row0 + tl.arange(0, BM).to(tl.int64), d_out, r, f_ptr, coeff_ptr, scale, stream_ptr, stream0,
                        K, tid, k0, k1, BM, R_PAD, REGEN, COEFF_PTR, STREAM_PTR, QUAD_R, FAST, WIDE_MUL)
    if DOT_PRECISION == "fp16":
        m_scale, m_inverse = _pow2_scale(tl.max(tl.max(tl.abs(m), axis=1), axis=0))
        v_scale, v_inverse = _pow2_scale(tl.load(v_amax + t))
        m, scale = (m * m_inverse).to(tl.float16), m_scale * v_scale
    else:
        scale = 1.0
    for ct in tl.range(begin, end):
        cols0 = ct * BN  # int32: d_in < 2**31 (ops checks it)
        v = _v_tile(v_ptr, cols0 + tl.arange(0, BN).to(tl.int64), d_in, r, R_PAD)
        if DOT_PRECISION == "fp16":
            v = (v * v_inverse).to(tl.float16)
        _update_tile(w_ptr, row0, cols0, d_out, d_in, m, v, scale, finite, tid, rk0, rk1, BM, BN, STOCHASTIC, ALIGNED8,
                     FAST, WIDE_MUL, DOT_PRECISION)


@triton.jit
def _basis_amax_kernel(v_base, inputs, out, A_V: tl.constexpr, BLOCK: tl.constexpr):
    """out[t] = max|V_t| over basis t of the inputs table (columns: offset / A_V, factor offset, numel), one
    program per (basis, split): atomic max of non-negative floats on a zeroed out. A basis holding NaN gets an
    unspecified value (its product is NaN anyway)."""
    t = tl.program_id(0)
    v_ptr = v_base + tl.load(inputs + 3 * t) * A_V
    numel = tl.load(inputs + 3 * t + 2)
    amax = tl.zeros([BLOCK], tl.float32)
    for start in tl.range(tl.program_id(1).to(tl.int64) * BLOCK, numel, tl.num_programs(1).to(tl.int64) * BLOCK):
        i = start + tl.arange(0, BLOCK)
        amax = tl.maximum(amax, tl.abs(tl.load(v_ptr + i, mask=i < numel, other=0.0).to(tl.float32)))
    tl.atomic_max(out + t, tl.max(amax, axis=0))


@triton.jit(do_not_specialize=["scale"])
def _delta_add_kernel(out_ptr, xv_ptr, f_ptr, scale, n_rows, d_out, r, BT: tl.constexpr, BN: tl.constexpr):
    """out[t, j] += scale * sum_k xv[t, k] f[j, k] on a [BT, BN] tile: the sum in float32, one rounding into out's
    dtype (out [n_rows, d_out], xv [n_rows, r], f [d_out, r], all contiguous)."""
    rows = tl.program_id(0).to(tl.int64) * BT + tl.arange(0, BT)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    row_in, col_in = rows < n_rows, cols < d_out
    acc = tl.zeros((BT, BN), tl.float32)
    for k in range(r):
        a = tl.load(xv_ptr + rows * r + k, mask=row_in, other=0.0)
        b = tl.load(f_ptr + cols * r + k, mask=col_in, other=0.0)
        acc += a[:, None] * b[None, :]
    offsets = rows[:, None] * d_out + cols[None, :]
    mask = row_in[:, None] & col_in[None, :]
    out = tl.load(out_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, (out.to(tl.float32) + scale * acc).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["n", "k0", "k1"])
def _philox_kernel(c_ptr, out_ptr, n, k0, k1, BLOCK: tl.constexpr):
    """Raw Philox words, for the known-answer tests: c_ptr/out_ptr are [4, n] uint32 (as int64 holders)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    c0 = tl.load(c_ptr + i, mask=m).to(tl.uint32)
    c1 = tl.load(c_ptr + n + i, mask=m).to(tl.uint32)
    c2 = tl.load(c_ptr + 2 * n + i, mask=m).to(tl.uint32)
    c3 = tl.load(c_ptr + 3 * n + i, mask=m).to(tl.uint32)
    x0, x1, x2, x3 = _philox4x32_10(c0, c1, c2, c3, k0.to(tl.uint32), k1.to(tl.uint32))
    tl.store(out_ptr + i, x0.to(tl.int64), mask=m)
    tl.store(out_ptr + n + i, x1.to(tl.int64), mask=m)
    tl.store(out_ptr + 2 * n + i, x2.to(tl.int64), mask=m)
    tl.store(out_ptr + 3 * n + i, x3.to(tl.int64), mask=m)


# ------------------------------------------------------------------------------------------------- host code
_TABLES = TableCache()


def _pow2_divisor(values, cap: int) -> int:
    """The largest power of two <= cap dividing every value."""
    a = cap
    while a > 1 and any(v % a for v in values):
        a //= 2
    return a


def _chunk_table(dsts, srcs, tensor_ids, offsets, unit):
    """(device int64 table [chunks, 7], A_DST, A_SRC, A_LOCAL); cached on the tensors' addresses and sizes and
    on the tile settings. Columns: dst and src element offsets from the first tensor (/ A_DST, / A_SRC), the
    chunk's first local index (/ A_LOCAL, may be negative to start on a unit boundary), numel, offset,
    tensor_id, tiles in the chunk. A_* are the largest powers of two (up to 16 bytes) dividing a column, so
    the kernel multiplies them back in as constants and the compiler can prove 16-byte alignment."""
    key = (dsts[0].device, unit, TILE, CHUNK_TILES, dsts[0].dtype, srcs[0].dtype,
           tensor_list_key(dsts, srcs, tensor_ids, offsets))
    return _TABLES.get_or_build(key, lambda: _build_table(dsts, srcs, tensor_ids, offsets, unit))


def _element_offsets(ts):
    """Each tensor's address minus the first one's, in elements (the kernels index from the first tensor)."""
    deltas = [t.data_ptr() - ts[0].data_ptr() for t in ts]
    assert all(d % t.element_size() == 0 for d, t in zip(deltas, ts))
    return [d // t.element_size() for d, t in zip(deltas, ts)]


def _build_table(dsts, srcs, tensor_ids, offsets, unit):
    dst_off, src_off = _element_offsets(dsts), _element_offsets(srcs)
    rows = []
    for t, local0, length in chunk_spans([d.numel() for d in dsts], offsets, unit, TILE * CHUNK_TILES):
        rows.append([dst_off[t], src_off[t], local0, dsts[t].numel(), offsets[t], tensor_ids[t], -(-length // TILE)])
    aligned_ptrs = all(t.data_ptr() % 16 == 0 for t in (*dsts, *srcs))
    a_dst = _pow2_divisor([r[0] for r in rows], 16 // dsts[0].element_size() if aligned_ptrs else 1)
    a_src = _pow2_divisor([r[1] for r in rows], 16 // srcs[0].element_size() if aligned_ptrs else 1)
    a_local = _pow2_divisor([r[2] for r in rows], max(a_dst, a_src))
    for r in rows:
        r[0] //= a_dst
        r[1] //= a_src
        r[2] //= a_local
    table = to_device(torch.tensor(rows, dtype=torch.int64), dsts[0].device)
    return table, a_dst, a_src, a_local


def _launch(dsts, srcs, *, seed, coeffs, streams, tensor_ids, offsets, dist, rounding, rounding_seed, has_src=True):
    table, a_dst, a_src, a_local = _chunk_table(dsts, srcs, tensor_ids, offsets, max(C.unit_of(dist), C.ROUNDING_UNIT))
    if table.shape[0] == 0:
        return
    coeff_arg, scale, stream_arg = direction_args(coeffs, streams, dsts[0].device)
    k0, k1 = key_words(seed)
    rk0, rk1 = key_words(rounding_seed)
    _combine_kernel[(table.shape[0],)](
        dsts[0], srcs[0], table, coeff_arg, scale, stream_arg, streams[0], len(streams), k0, k1, rk0, rk1,
        TILE=TILE, UNIT=C.unit_of(dist), HAS_SRC=has_src, COEFF_PTR=coeff_arg is not None,
        STREAM_PTR=stream_arg is not None, STOCHASTIC=rounding == "stochastic", FAST=not interpreting(),
        WIDE_MUL=WIDE_MUL and not interpreting(), K_UNROLL=K_UNROLL,
        A_DST=a_dst, A_SRC=a_src, A_LOCAL=a_local, num_warps=NUM_WARPS,
        **({"maxnreg": MAX_REGISTERS[rounding]} if MAX_REGISTERS[rounding] and not interpreting() else {}))


combine = functools.partial(combine_by_dtype, _launch)  # reference.combine's contract, a launch per dtype pair


def stream_values(n, *, seed, stream, tensor_id, offset, dist, device):
    out = torch.empty(n, dtype=torch.float32, device=device)
    _launch([out], [out], seed=seed, coeffs=[1.0], streams=[stream], tensor_ids=[tensor_id], offsets=[offset],
            dist=dist, rounding="nearest", rounding_seed=seed, has_src=False)
    return out


def philox4x32_10(c0, c1, c2, c3, seed: int):
    """Raw words through the device code (int64 tensors of 32-bit words in, out)."""
    c = torch.stack([torch.as_tensor(x, dtype=torch.int64) for x in (c0, c1, c2, c3)]).contiguous()
    n = c.shape[1]
    out = torch.empty_like(c)
    _philox_kernel[(triton.cdiv(n, 128),)](c, out, n, *key_words(seed), BLOCK=128)
    return tuple(out)


# (BM, BN, warps, stages) of the low-rank kernel per rounding and padded rank: r 16-64 the fastest of
# bench_lowrank.py --sweep on the H100 (bench/results/lowrank_*.json); r 128 the largest tile whose sm_90 compile
# needs no local-memory stack. Triton 3.6's software pipeliner fails on a 1xTF32 dot of BM >= 64 (a wgmma);
# such tiles take stages 1 where the product is "tf32" (tests/compile_lowrank_sm90.py compiles every entry).
LOWRANK_TILES = {
    "nearest": {16: (32, 128, 8, 3), 32: (32, 128, 8, 3), 64: (64, 128, 8, 3), 128: (16, 64, 8, 3)},
    "stochastic": {16: (32, 64, 4, 1), 32: (32, 64, 4, 3), 64: (32, 64, 4, 1), 128: (16, 64, 8, 3)},
}
LOWRANK_INTERPRETER_TILES = (16, 32, 4, 1)  # small tiles keep the interpreter's tests fast
# The product's tensor-core precision. fp32 weights: 3xTF32 (split operands, three passes), fp32-level products.
# 16-bit weights, per padded rank (LOWRANK_HALF_PRECISION): "tf32", one TF32 pass, operands rounded to 11
# significant bits; or "fp16": M's tile and the basis scaled by exact powers of two (_pow2_scale: M's from its
# tile, V's from max|V| per basis) and rounded to fp16, whose dot runs at twice the TF32 rate with half the
# shared memory and pipelines where Triton 3.6 refuses a 1xTF32 wgmma (on the H100 r 32: 1.92 against 2.21 ms,
# r 64: 2.14 against 2.87 ms, one nearest call over OPT-1.3B; r 16 no faster, r 8 slower:
# bench/results/raw/2026-11-24_*). Either puts an element of M V^T off by at most 2^-10 sum_j |M_ij| |V_cj|
# (below half a bf16 ulp of the update (2^-9), about one fp16 rounding of it); fp16 adds at most
# 2^-24 (max|V| sum_j |M_ij| + max|M| sum_j |V_cj|) from elements that fall below fp16's normal range after
# scaling (LOWRANK_PRODUCT_ERROR: relative, underflow). +c and -c still give exactly opposite updates (scales
# and roundings are sign-symmetric), so perturb / restore cancel as before.
LOWRANK_HALF_PRECISION = {16: "tf32", 32: "fp16", 64: "fp16", 128: "tf32"}
LOWRANK_PRODUCT_ERROR = {"tf32x3": (2.0**-20, 0.0), "tf32": (2.0**-10, 0.0), "fp16": (2.0**-10, 2.0**-24),
                         "ieee": (0.0, 0.0)}


def _dot_precision(dtype, r_pad) -> str:
    return "tf32x3" if dtype == torch.float32 else LOWRANK_HALF_PRECISION[r_pad]


def lowrank_product_error(dtype) -> tuple:
    """(relative, underflow): |product - exact| of the low-rank kernel for weights of `dtype` (any rank) is at
    most relative sum_j |M_ij| |V_cj| + underflow (max|V| sum_j |M_ij| + max|M| sum_j |V_cj|), beyond fp32
    accumulation."""
    bounds = [LOWRANK_PRODUCT_ERROR[_dot_precision(dtype, r_pad)] for r_pad in LOWRANK_HALF_PRECISION]
    return max(b[0] for b in bounds), max(b[1] for b in bounds)


LOWRANK_MIN_PROGRAMS = 1024  # below this many programs, each program's tile range is split over several
_LOWRANK_TABLE_COLS = 9


def _rank_pad(r: int) -> int:
    return padded_rank(r, 16)


def _lowrank_tiles(r_pad, rounding):
    return LOWRANK_INTERPRETER_TILES if interpreting() else LOWRANK_TILES[rounding][r_pad]


def _lowrank_table(ws, ranks, tensor_ids, bm, bn):
    """(device int64 table [programs, 9], A_W, A_DIN), cached on the weights (addresses, shapes), ranks, ids
    and tiles, not on the bases (AGZO's change every step). A row per program: the weight's element offset
    from the list's first (/ A_W); its index t in the list; d_out; d_in (/ A_DIN); r; tensor id; first row;
    column tiles [begin, end). A_W and A_DIN are the largest powers of two (up to 16 bytes) dividing every
    weight offset and every d_in, so the compiler can prove vector alignment."""
    key = ("lowrank", ws[0].device, ws[0].dtype, bm, bn, LOWRANK_MIN_PROGRAMS,
           tuple((w.data_ptr(), *w.shape, r, tid) for w, r, tid in zip(ws, ranks, tensor_ids)))
    return _TABLES.get_or_build(key, lambda: _build_lowrank_table(ws, ranks, tensor_ids, bm, bn))


def _build_lowrank_table(ws, ranks, tensor_ids, bm, bn):
    aligned = all(w.data_ptr() % 16 == 0 for w in ws)
    w_off = _element_offsets(ws)
    d_in = [w.shape[1] for w in ws]
    a_w = _pow2_divisor(w_off, 16 // ws[0].element_size() if aligned else 1)
    a_din = _pow2_divisor(d_in, 16 // ws[0].element_size() if aligned else 1)
    meta = torch.tensor([[wo // a_w, t, w.shape[0], w.shape[1] // a_din, r, tid]
                         for t, (wo, w, r, tid) in enumerate(zip(w_off, ws, ranks, tensor_ids))], dtype=torch.int64)
    blocks = lowrank_blocks([w.shape for w in ws], bm, bn, LOWRANK_MIN_PROGRAMS)
    table = torch.cat([meta[blocks[:, 0]], blocks[:, 1:]], dim=1)
    assert table.shape[1] == _LOWRANK_TABLE_COLS
    return to_device(table, ws[0].device), a_w, a_din


def _lowrank_inputs(vs, fs, device):
    """(device int64 [n, 3], A_V): each basis's element offset from the first one's / A_V (the largest power of
    two up to 16 bytes dividing them all, so the kernel can prove vector alignment), each factor's element
    offset and each basis's numel; cached on their addresses, dtypes and sizes (the calls of one step reuse the
    same bases: no pinned copy per call)."""
    key = ("lowrank-inputs", device, tuple((t.data_ptr(), t.dtype, t.numel()) for t in vs + (fs or [])))

    def build():
        v_off = _element_offsets(vs)
        a_v = _pow2_divisor(v_off, 16 // vs[0].element_size() if all(v.data_ptr() % 16 == 0 for v in vs) else 1)
        rows = list(zip([o // a_v for o in v_off], _element_offsets(fs) if fs else [0] * len(vs),
                        [v.numel() for v in vs]))
        return to_device(torch.tensor(rows, dtype=torch.int64), device), a_v

    return _TABLES.get_or_build(key, build)


AMAX_SPLITS, AMAX_BLOCK = 8, 1024


def _basis_amax(vs, inputs, a_v):
    """Device float32 [len(vs)]: max|V_t| of each basis, in one launch."""
    out = torch.zeros(len(vs), device=vs[0].device, dtype=torch.float32)
    _basis_amax_kernel[(len(vs), AMAX_SPLITS)](vs[0], inputs, out, A_V=a_v, BLOCK=AMAX_BLOCK)
    return out


def lowrank_combine(weights, bases, *, factors, seed, coeffs, streams, tensor_ids, rounding, rounding_seed):
    """Same contract as reference.lowrank_combine: one launch per (dtypes, padded rank) group of the list."""
    groups = collections.defaultdict(list)
    for t, (w, v) in enumerate(zip(weights, bases)):
        if w.numel():
            groups[(w.dtype, v.dtype, factors and factors[t].dtype, _rank_pad(v.shape[1]))].append(t)
    if not groups:
        return
    regen = factors is None
    coeff_arg, scale, stream_arg, k, stream0 = lowrank_direction_args(factors, coeffs, streams, weights[0].device)
    k0, k1 = key_words(seed)
    rk0, rk1 = key_words(rounding_seed)
    for (*_, r_pad), idx in groups.items():
        ws, vs = [weights[t] for t in idx], [bases[t] for t in idx]
        fs = None if regen else [factors[t] for t in idx]
        bm, bn, warps, stages = _lowrank_tiles(r_pad, rounding)
        table, a_w, a_din = _lowrank_table(ws, [v.shape[1] for v in vs], [tensor_ids[t] for t in idx], bm, bn)
        inputs, a_v = _lowrank_inputs(vs, fs, ws[0].device)
        precision = _dot_precision(ws[0].dtype, r_pad)
        v_amax = _basis_amax(vs, inputs, a_v) if precision == "fp16" else inputs  # else unread: any pointer
        _lowrank_kernel[(table.shape[0],)](
            ws[0], vs[0], vs[0] if regen else fs[0], table, inputs, v_amax, coeff_arg, scale, stream_arg, stream0, k,
            k0, k1, rk0, rk1, BM=bm, BN=bn, R_PAD=r_pad, REGEN=regen, COEFF_PTR=coeff_arg is not None,
            STREAM_PTR=stream_arg is not None,
            STOCHASTIC=rounding == "stochastic", QUAD_R=all(v.shape[1] % 4 == 0 for v in vs),
            ALIGNED8=all(w.shape[1] % 8 == 0 for w in ws), FAST=not interpreting(),
            WIDE_MUL=WIDE_MUL and not interpreting(), A_W=a_w, A_DIN=a_din, A_V=a_v,
            R_EXACT=all(v.shape[1] == r_pad for v in vs),
            DOT_PRECISION=precision, num_warps=warps, num_stages=stages)


DELTA_ADD_TILE = (32, 128)  # rows x output columns per program


def lowrank_delta_add(output, xv, factor, scale):
    """Same contract as reference.lowrank_delta_add, for contiguous output [T, d_out], xv [T, r] and float32
    factor [d_out, r]: one launch, one read and one write of output."""
    n_rows, d_out = output.shape
    bt, bn = DELTA_ADD_TILE
    _delta_add_kernel[(triton.cdiv(n_rows, bt), triton.cdiv(d_out, bn))](
        output, xv, factor, float(scale), n_rows, d_out, xv.shape[1], BT=bt, BN=bn, num_warps=4)
