"""lowrank_combine_ / lowrank_add_: the regenerated factor follows the contract, parity with the reference,
unbiased stochastic rounding, non-finite coefficients, bad input."""
import os

import pytest
import torch

import zokernels as zk
from zokernels import backends
from zokernels.backends import launch

from .conftest import BACKENDS, DEVICE, ON_GPU
from .test_contract import Z_ATOL
from .test_ops import _ulp

LOWRANK_BACKENDS = [b for b in BACKENDS if b != "reference"]  # the fast backends, against the reference
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _weight_and_basis(d_out, d_in, r, dtype, seed=0, basis_dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(d_out, d_in, generator=gen) * 0.5).to(dtype).to(DEVICE)
    basis = torch.linalg.qr(torch.randn(d_in, r, generator=gen, dtype=torch.float64))[0].to(basis_dtype).to(DEVICE)
    return weight, basis.contiguous()


def _abs_factor(shape, *, seed, coeffs, streams, tensor_id):
    """sum_k |c_k| |N_k| [d_out, r], N_k from the reference (bounds the terms of the product)."""
    n = [zk.normal(shape[0] * shape[1], seed=seed, stream=s, tensor_id=tensor_id, device=DEVICE, backend="reference")
         for s in streams]
    return sum(abs(c) * z.view(shape).abs().float() for c, z in zip(coeffs, n))


def _assert_close(got, ref, dtype, coeff_abs_sum, basis, *, backend, abs_factor, bases_applied=None):
    """Gaussian values may differ by Z_ATOL per unit coefficient (fast-math special functions), summed over the
    r basis entries of a row; the fp32 product adds a few fp32 ulps, and a backend's reduced-precision product
    (lowrank_product_error: TF32 or scaled fp16 for 16-bit weights in Triton) its stated relative bound times
    |M| |V|^T plus its underflow term; a rounded result may move one ulp. bases_applied: the bases of every
    update the weight got with this factor (default `basis` once)."""
    g, r = got.float(), ref.float()
    row_l1 = basis.float().abs().sum(1).max().item()
    abs_product = sum(abs_factor @ v.float().abs().T for v in bases_applied or [basis])
    relative, underflow = backends.load(backend).lowrank_product_error(dtype)
    product = relative * abs_product + underflow * sum(
        abs_factor.sum(1, keepdim=True) * v.float().abs().max() + abs_factor.max() * v.float().abs().sum(1)[None, :]
        for v in bases_applied or [basis])
    roundings = len(bases_applied or [basis])  # each rounded update may move the result one more ulp, at the
    magnitude = r.abs() if roundings == 1 else r.abs() + abs_product  # ulp of an intermediate result at most
    tol = (coeff_abs_sum * Z_ATOL * row_l1 + 4e-7 * (1 + r.abs()) + product
           + roundings * _ulp(magnitude, dtype) * (1 if dtype != torch.float32 else 4))
    assert ((g - r).abs() <= tol).all(), ((g - r).abs() - tol).max()


def test_the_factor_is_the_contracts_stream_read_row_major():
    """A single direction: W_after - W_before = c N V^T with N = normal(d_out * r).view(d_out, r)."""
    weight, basis = _weight_and_basis(12, 20, 8, torch.float32)
    before = weight.clone()
    zk.lowrank_combine_(weight, basis, seed=9, coeffs=[0.75], streams=[5], tensor_ids=[3], backend="reference")
    n = zk.normal(12 * 8, seed=9, stream=5, tensor_id=3, device=DEVICE, backend="reference").view(12, 8)
    expected = before.double() + 0.75 * n.double() @ basis.double().T
    torch.testing.assert_close(weight.double(), expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("r", [5, 8, 16])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_lowrank_combine_parity(backend, dtype, r, rounding):
    """Shapes with tails in both dimensions (d_in not a multiple of 4 for r=5: per-element rounding words)."""
    d_in = 50 if r == 5 else 52
    weight, basis = _weight_and_basis(37, d_in, r, dtype, seed=r)
    ref = weight.clone()
    coeffs, streams = [0.5, -0.25, 1.5], [1, 7, 2]
    assert zk.lowrank_combine_(weight, basis, seed=3, coeffs=coeffs, streams=streams, tensor_ids=[2], rounding=rounding,
                               rounding_seed=11, backend=backend) == backend
    zk.lowrank_combine_(ref, basis, seed=3, coeffs=coeffs, streams=streams, tensor_ids=[2], rounding=rounding,
                        rounding_seed=11, backend="reference")
    _assert_close(weight, ref, dtype, sum(map(abs, coeffs)), basis, backend=backend,
                  abs_factor=_abs_factor((37, r), seed=3, coeffs=coeffs, streams=streams, tensor_id=2))


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("r", [24, 64, 100])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_lowrank_combine_parity_across_row_blocks_and_column_tiles(backend, dtype, r, rounding):
    """140 x 136: two of the CUDA tensor-core kernel's 128-row blocks (the second mostly past d_out), three of its
    64-column tiles (the last 8 wide), ranks padded to 32 and exactly 64 (r = 100: its FMA kernel); the other
    kernels' tiles cross too."""
    weight, basis = _weight_and_basis(140, 136, r, dtype, seed=r + 1)
    ref = weight.clone()
    coeffs, streams = [0.75, -0.5], [4, 9]
    kw = dict(seed=8, coeffs=coeffs, streams=streams, tensor_ids=[6], rounding=rounding, rounding_seed=2)
    zk.lowrank_combine_(weight, basis, backend=backend, **kw)
    zk.lowrank_combine_(ref, basis, backend="reference", **kw)
    _assert_close(weight, ref, dtype, sum(map(abs, coeffs)), basis, backend=backend,
                  abs_factor=_abs_factor((140, r), seed=8, coeffs=coeffs, streams=streams, tensor_id=6))


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
@pytest.mark.parametrize("basis_scale", [2.0**20, 2.0**-30], ids=["basis-above-fp16", "basis-below-fp16"])
def test_a_product_beyond_fp16s_range_matches_the_reference(backend, basis_scale):
    """bf16 weights whose bases and coefficients lie far outside fp16's range (a reduced-precision product must
    scale them, not overflow or flush them), their product of ordinary size; r 32 (Triton's bucket with the
    fp16 product)."""
    weight, basis = _weight_and_basis(37, 52, 32, torch.bfloat16, seed=5)
    basis = basis * basis_scale
    ref = weight.clone()
    coeffs, streams = [0.5 / basis_scale, -0.25 / basis_scale], [1, 7]
    for w, b in [(weight, backend), (ref, "reference")]:
        zk.lowrank_combine_(w, basis, seed=3, coeffs=coeffs, streams=streams, tensor_ids=[2], backend=b)
    assert not torch.equal(ref, _weight_and_basis(37, 52, 32, torch.bfloat16, seed=5)[0])
    _assert_close(weight, ref, torch.bfloat16, sum(map(abs, coeffs)), basis, backend=backend,
                  abs_factor=_abs_factor((37, 32), seed=3, coeffs=coeffs, streams=streams, tensor_id=2))


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lowrank_add_parity(backend, dtype):
    """The explicit factor (ZO-Act's merge): W + F V^T; basis and factor in bf16 are widened to fp32."""
    weight, basis = _weight_and_basis(33, 44, 16, dtype, basis_dtype=torch.bfloat16)
    factor = torch.randn(33, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16).to(DEVICE)
    ref = weight.clone()
    zk.lowrank_add_(weight, factor, basis, rounding="stochastic", rounding_seed=4, backend=backend)
    zk.lowrank_add_(ref, factor, basis, rounding="stochastic", rounding_seed=4, backend="reference")
    _assert_close(weight, ref, dtype, 0.0, basis, backend=backend, abs_factor=factor.float().abs())
    w0, _ = _weight_and_basis(33, 44, 16, dtype, basis_dtype=torch.bfloat16)
    exact = w0.double() + factor.double() @ basis.double().T
    assert ((ref.double() - exact).abs() <= _ulp(exact.float(), dtype).double() * 1.01).all()


def test_stochastic_rounding_of_small_low_rank_updates_is_unbiased():
    """bf16 weights of 1.0 (spacing 2^-7 above) get a positive rank-4 update of ~1e-4 per element: rounding to
    nearest keeps none of it; over 1000 rounding seeds the mean total update matches the exact one within 3%
    (the sampling error is about 0.5%)."""
    d_out, d_in = 64, 64
    weight = torch.ones(d_out, d_in, dtype=torch.bfloat16, device=DEVICE)
    basis = torch.rand(d_in, 4, generator=torch.Generator().manual_seed(0)).to(DEVICE) * 0.25
    factor = torch.full((d_out, 4), 2e-4, device=DEVICE)
    delta = factor.double() @ basis.double().T
    nearest = weight.clone()
    zk.lowrank_add_(nearest, factor, basis, rounding="nearest", backend="reference")
    assert torch.equal(nearest, weight)
    total = 0.0
    for seed in range(1000):
        w = weight.clone()
        zk.lowrank_add_(w, factor, basis, rounding="stochastic", rounding_seed=seed, backend="reference")
        total += (w.double() - 1.0).sum().item()
    assert abs(total / 1000 - delta.sum().item()) <= 0.03 * delta.sum().item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nonfinite_device_coefficient_writes_nothing(backend):
    weight, basis = _weight_and_basis(8, 12, 4, torch.bfloat16)
    before = weight.clone()
    coeffs = torch.tensor([0.5, float("nan")], device=DEVICE)
    zk.lowrank_combine_(weight, basis, seed=1, coeffs=coeffs, backend=backend)
    assert torch.equal(weight, before)


@pytest.mark.parametrize("call, error", [
    (lambda w, v: zk.lowrank_combine_(w, v[:7], seed=0, coeffs=[1.0]), "bases\\[0\\] has shape \\(7, 4\\): it must be \\(d_in, r\\) = \\(12, r\\)"),
    (lambda w, v: zk.lowrank_combine_(w, torch.zeros(12, 0, device=DEVICE), seed=0, coeffs=[1.0]), "rank r = 0 must be in \\[1, 128\\]"),
    (lambda w, v: zk.lowrank_combine_(w, torch.zeros(12, 129, device=DEVICE), seed=0, coeffs=[1.0]), "rank r = 129"),
    (lambda w, v: zk.lowrank_combine_(w, v.T.contiguous().T, seed=0, coeffs=[1.0]), "bases\\[0\\] .* is not contiguous"),
    (lambda w, v: zk.lowrank_combine_(w, v.double(), seed=0, coeffs=[1.0]), "bases\\[0\\] .* has dtype torch.float64"),
    (lambda w, v: zk.lowrank_combine_(w, v.to("meta"), seed=0, coeffs=[1.0]), "bases\\[0\\] is on meta"),
    (lambda w, v: zk.lowrank_combine_(w, v, seed=0, coeffs=[]), "coeffs is empty"),
    (lambda w, v: zk.lowrank_combine_(w, v, seed=0, coeffs=[float("inf")]), "coeffs\\[0\\]=inf is not finite"),
    (lambda w, v: zk.lowrank_combine_(w, v, seed=-1, coeffs=[1.0]), "seed=-1 is outside"),
    (lambda w, v: zk.lowrank_combine_(w, v, seed=0, coeffs=[1.0], rounding="up"), "rounding='up'"),
    (lambda w, v: zk.lowrank_combine_(w, w.view(-1)[:48].view(12, 4), seed=0, coeffs=[1.0]), "overlap"),
    (lambda w, v: zk.lowrank_combine_(w[0], v, seed=0, coeffs=[1.0]), "weights\\[0\\] must be 2-D"),
    (lambda w, v: zk.lowrank_add_(w, torch.zeros(8, 3, device=DEVICE), v), "factors\\[0\\] has shape \\(8, 3\\), expected \\(d_out, r\\) = \\(8, 4\\)"),
    (lambda w, v: zk.lowrank_combine_(w, v, seed=0, coeffs=[1.0], backend="nope"), "backend='nope'"),
    (lambda w, v: zk.lowrank_combine_([w, w.clone()], [v], seed=0, coeffs=[1.0]), "bases has 1 tensors for 2 weights"),
    (lambda w, v: zk.lowrank_combine_([w, w[:4]], [v, v], seed=0, coeffs=[1.0]), "weights\\+inputs\\[0\\] and .*\\[1\\] overlap"),
    (lambda w, v: zk.lowrank_combine_([w, w.clone()], [v, v], seed=0, coeffs=[1.0], tensor_ids=[0]), "tensor_ids has 1 entries for 2"),
    (lambda w, v: zk.lowrank_combine_([w, w.clone().float()], [v, v.to(torch.int32)], seed=0, coeffs=[1.0]), "bases\\[1\\] .* has dtype torch.int32"),
    (lambda w, v: zk.lowrank_combine_(w, v, seed=0, coeffs=[1.0], tensor_ids=3), "tensor_ids must be a sequence"),
])
def test_bad_input_is_refused_before_any_write(call, error):
    weight, basis = _weight_and_basis(8, 12, 4, torch.bfloat16)
    before = weight.clone()
    with pytest.raises((ValueError, TypeError), match=error):
        call(weight, basis)
    assert torch.equal(weight, before)


def test_a_weight_inside_a_basis_is_refused_even_between_overlapping_bases():
    """Bases may share memory; a weight may not overlap any of them. Here basis 0 spans the whole buffer, basis 1
    lies inside it and the weight lies inside basis 0 beyond basis 1 (a check of neighbours only misses it)."""
    buf = torch.randn(200, device=DEVICE)
    weights = [buf[50:58].view(2, 4), torch.randn(3, 2, device=DEVICE)]
    bases = [buf[0:100].view(4, 25), buf[10:20].view(2, 5)]
    before = buf.clone()
    with pytest.raises(ValueError, match="overlap"):
        zk.lowrank_combine_(weights, bases, seed=0, coeffs=[1.0])
    assert torch.equal(buf, before)


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("r", [16, 64])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_a_program_walking_many_column_tiles_matches_the_reference(backend, dtype, r, rounding, monkeypatch):
    """20 x 600 with one program per row block: ten 64-column tiles (the last 24 wide) in one loop, so the CUDA
    tensor-core kernel's next-tile loads and its two basis buffers take turns many times."""
    monkeypatch.setattr(backends.load(backend), "LOWRANK_MIN_PROGRAMS", 1)
    weight, basis = _weight_and_basis(20, 600, r, dtype, seed=r + 3)
    ref = weight.clone()
    coeffs, streams = [-0.5, 1.25], [2, 5]
    kw = dict(seed=12, coeffs=coeffs, streams=streams, tensor_ids=[3], rounding=rounding, rounding_seed=6)
    zk.lowrank_combine_(weight, basis, backend=backend, **kw)
    zk.lowrank_combine_(ref, basis, backend="reference", **kw)
    _assert_close(weight, ref, dtype, sum(map(abs, coeffs)), basis, backend=backend,
                  abs_factor=_abs_factor((20, r), seed=12, coeffs=coeffs, streams=streams, tensor_id=3))


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
@pytest.mark.parametrize("r", [24, 64])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_many_row_blocks_of_one_weight_match_the_reference(backend, r, rounding, monkeypatch):
    """660 x 72 bf16 with one program per row block: six of the CUDA tensor-core kernel's 128-row blocks (each with
    its own fp16 scale of M at r = 64), the last one ending inside a warp's 16 rows, each walking two column tiles
    (the last 8 wide)."""
    monkeypatch.setattr(backends.load(backend), "LOWRANK_MIN_PROGRAMS", 1)
    weight, basis = _weight_and_basis(660, 72, r, torch.bfloat16, seed=r + 5)
    ref = weight.clone()
    coeffs, streams = [1.5, -0.75], [6, 3]
    kw = dict(seed=21, coeffs=coeffs, streams=streams, tensor_ids=[8], rounding=rounding, rounding_seed=4)
    zk.lowrank_combine_(weight, basis, backend=backend, **kw)
    zk.lowrank_combine_(ref, basis, backend="reference", **kw)
    _assert_close(weight, ref, torch.bfloat16, sum(map(abs, coeffs)), basis, backend=backend,
                  abs_factor=_abs_factor((660, r), seed=21, coeffs=coeffs, streams=streams, tensor_id=8))


@pytest.mark.skipif("cuda" not in LOWRANK_BACKENDS, reason="the CUDA backend's tile walk")
@pytest.mark.parametrize("r", [8, 16, 24, 48])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("min_programs", [1, 64])
def test_cuda_interior_and_edge_programs_match_the_reference(r, dtype, rounding, min_programs, monkeypatch):
    """In each tensor-core geometry (R rows per block, C columns per tile, per padded rank and rounding, as
    csrc/zo_kernels.h builds them: r = 8 staged; 16 and 24 (padded to 32) prepared; 48 (padded to 64) staged with
    nearest rounding, prepared with stochastic) on (2 R + 16) x 3 C (two row blocks inside the weight, the third
    past d_out) and 2 R x (2 C + 8) (two whole tiles, the last 8 wide): the programs inside the weight take the
    interior walk without per-chunk checks, the others the checked one; with one program per row block (multi-tile
    walks) and with the tiles split over programs (min_programs 64)."""
    cuda = backends.load("cuda")
    monkeypatch.setattr(cuda, "LOWRANK_MIN_PROGRAMS", min_programs)
    rows, cols = cuda.lowrank_geometry("tensor_core", launch.padded_rank(r, 8), rounding)
    shapes = [(2 * rows + 16, 3 * cols), (2 * rows, 2 * cols + 8)]
    pairs = [_weight_and_basis(d_out, d_in, r, dtype, seed=31 + i) for i, (d_out, d_in) in enumerate(shapes)]
    weights, bases = [w for w, _ in pairs], [v for _, v in pairs]
    refs = [w.clone() for w in weights]
    coeffs, streams = [0.5, -1.25], [7, 2]
    kw = dict(seed=17, coeffs=coeffs, streams=streams, tensor_ids=[4, 5], rounding=rounding, rounding_seed=9)
    zk.lowrank_combine_(weights, bases, backend="cuda", **kw)
    zk.lowrank_combine_(refs, bases, backend="reference", **kw)
    for weight, ref, basis, tensor_id in zip(weights, refs, bases, (4, 5)):
        _assert_close(weight, ref, dtype, sum(map(abs, coeffs)), basis, backend="cuda",
                      abs_factor=_abs_factor((weight.shape[0], r), seed=17, coeffs=coeffs, streams=streams,
                                             tensor_id=tensor_id))


def _lowrank_list(seed):
    """Weights of several shapes, dtypes and rank buckets (r 5 and 8 pad to 16, r 20 to 32, r 40 and 64 to 64: three
    bf16 weights of 2, 3 and 1 column tiles of 64 in the CUDA kernel's staged launch, 1, 2 and 1 of 128 in its
    prepared one with stochastic rounding), one basis shared."""
    specs = [(37, 50, 5, torch.bfloat16), (20, 52, 8, torch.float32), (33, 52, 8, torch.float32),
             (9, 64, 20, torch.bfloat16), (40, 24, 16, torch.float16), (24, 70, 40, torch.bfloat16),
             (30, 150, 64, torch.bfloat16), (12, 40, 64, torch.bfloat16)]
    pairs = [_weight_and_basis(d_out, d_in, r, dtype, seed=seed + i) for i, (d_out, d_in, r, dtype) in enumerate(specs)]
    weights, bases = [w for w, _ in pairs], [v for _, v in pairs]
    bases[2] = bases[1]  # two layers fed by one input share a basis
    return weights, bases


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("split_columns", [True, False], ids=["column-split", "whole-rows"])
def test_a_list_of_weights_in_one_call_matches_the_reference_and_single_calls(backend, rounding, split_columns,
                                                                              monkeypatch):
    """Multi-tensor launch: every weight as the reference computes it (tolerance as the single parity test), and
    bit-identical to one call per weight. whole-rows: each program walks all column tiles of its row block."""
    monkeypatch.setattr(backends.load(backend), "LOWRANK_MIN_PROGRAMS", 1024 if split_columns else 1)
    weights, bases = _lowrank_list(seed=3)
    refs, singles = [w.clone() for w in weights], [w.clone() for w in weights]
    coeffs, streams, tids = [0.5, -1.25], [3, 1], [7, 0, 2, 11, 5, 4, 9, 13]
    kw = dict(seed=4, coeffs=coeffs, streams=streams, rounding=rounding, rounding_seed=9)
    assert zk.lowrank_combine_(weights, bases, tensor_ids=tids, backend=backend, **kw) == backend
    zk.lowrank_combine_(refs, bases, tensor_ids=tids, backend="reference", **kw)
    for i, (w, v) in enumerate(zip(singles, bases)):
        zk.lowrank_combine_(w, v, tensor_ids=[tids[i]], backend=backend, **kw)
    for w, ref, single, v, tid in zip(weights, refs, singles, bases, tids):
        _assert_close(w, ref, w.dtype, sum(map(abs, coeffs)), v, backend=backend,
                      abs_factor=_abs_factor((w.shape[0], v.shape[1]), seed=4, coeffs=coeffs, streams=streams,
                                             tensor_id=tid))
        assert torch.equal(w, single)


@pytest.mark.skipif(not LOWRANK_BACKENDS, reason="no fast low-rank backend here")
@pytest.mark.parametrize("backend", LOWRANK_BACKENDS)
def test_new_bases_for_the_same_weights_are_read_where_they_are(backend):
    """AGZO passes new bases every step for the same weights: the cached launch table (keyed on the weights) must
    not carry the previous bases' addresses. Second call with bases at new addresses, against the reference."""
    weights, bases = _lowrank_list(seed=5)
    refs = [w.clone() for w in weights]
    kw = dict(seed=2, coeffs=[0.5], rounding="nearest")
    zk.lowrank_combine_(weights, bases, backend=backend, **kw)
    zk.lowrank_combine_(refs, bases, backend="reference", **kw)
    moved = [torch.flip(v, dims=[0]).contiguous() for v in bases]  # other values, other memory
    del bases
    zk.lowrank_combine_(weights, moved, backend=backend, **kw)
    zk.lowrank_combine_(refs, moved, backend="reference", **kw)
    for t, (w, ref, v) in enumerate(zip(weights, refs, moved)):  # two updates with the same N (the same seed)
        _assert_close(w, ref, w.dtype, 1.0, v, backend=backend, bases_applied=[torch.flip(v, dims=[0]), v],
                      abs_factor=_abs_factor((w.shape[0], v.shape[1]), seed=2, coeffs=[0.5], streams=[0],
                                             tensor_id=t))


@pytest.mark.parametrize("min_programs", [1, 64, 10**6])
def test_lowrank_programs_cover_every_tile_of_every_weight_once(min_programs):
    """launch.lowrank_blocks (both GPU backends' tables): every (row block, column tile) of every weight belongs
    to exactly one program, whether or not the column tiles are split."""
    from zokernels.backends.launch import lowrank_blocks

    shapes, bm, bn = [(37, 50), (1, 300), (64, 64), (200, 7)], 16, 32
    seen = {}
    for t, row0, c_begin, c_end in lowrank_blocks(shapes, bm, bn, min_programs).tolist():
        assert row0 % bm == 0 and 0 <= c_begin < c_end
        for c in range(c_begin, c_end):
            seen[(t, row0, c)] = seen.get((t, row0, c), 0) + 1
    expected = {(t, row0, c) for t, (d_out, d_in) in enumerate(shapes) for row0 in range(0, d_out, bm)
                for c in range(-(-d_in // bn))}
    assert set(seen) == expected and set(seen.values()) == {1}


def test_lowrank_programs_come_longest_first_with_each_weights_row_blocks_in_order():
    """The GPU starts blocks in table order: long programs first, so none is left to run alone at the end; among
    programs of one length, weights and their row blocks keep their order."""
    from zokernels.backends.launch import lowrank_blocks

    shapes = [(64, 64), (32, 256), (64, 64), (16, 512)]  # 2, 8, 2 and 16 column tiles of 32
    table = lowrank_blocks(shapes, 16, 32, min_programs=1).tolist()
    lengths = [c_end - c_begin for _, _, c_begin, c_end in table]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] == 16
    assert [(t, row0) for t, row0, _, _ in table] == [(3, 0), (1, 0), (1, 16), (0, 0), (0, 16), (0, 32), (0, 48),
                                                     (2, 0), (2, 16), (2, 32), (2, 48)]


@pytest.mark.skipif("triton" not in BACKENDS, reason="no Triton here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_the_basis_maxima_of_the_fp16_product_are_each_bases_own(dtype):
    """_basis_amax (the scales of the fp16 product): max|V_t| of every basis in one launch, for bases of very
    different magnitudes, an all-zero one, and one longer than the launch's splits x block (its loop)."""
    from zokernels.backends import triton_backend

    gen = torch.Generator().manual_seed(4)
    numel = triton_backend.AMAX_SPLITS * triton_backend.AMAX_BLOCK + 300
    vs = [(torch.randn(n, 4, generator=gen) * s).to(dtype).to(DEVICE)
          for n, s in [(13, 1e-3), (numel // 4, 1.0), (50, 3e4), (7, 0.0)]]
    vs[1].view(-1)[-1] = 123.0  # the largest entry in the last block of the longest basis
    inputs, a_v = triton_backend._lowrank_inputs(vs, None, vs[0].device)
    got = triton_backend._basis_amax(vs, inputs, a_v)
    assert torch.equal(got.cpu(), torch.stack([v.abs().max().float() for v in vs]).cpu())


def test_every_rank_has_a_tile_configuration():
    import triton

    from zokernels.backends import triton_backend

    for rounding, tiles in triton_backend.LOWRANK_TILES.items():
        for r in range(1, zk.ops.MAX_RANK + 1):
            bm, bn, warps, stages = tiles[max(triton.next_power_of_2(r), 16)]
            assert bm >= 16 and bn >= 16 and warps in (4, 8) and stages >= 1  # tl.dot needs tiles of at least 16


@pytest.mark.parametrize("r_pad", [16, 32, 64, 128])
def test_every_tile_configuration_compiles_for_sm90(r_pad):
    """The H100 compile of the low-rank kernel with each rank bucket's tiles, at each weight dtype's product
    precision (no GPU needed: Triton compiles for a named target; in a process without the interpreter). A
    refused configuration (as Triton 3.6's pipeliner refuses a 1xTF32 wgmma dot with stages > 1) fails here, not
    at a user's first call."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "tests.compile_lowrank_sm90", str(r_pad)], env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("cubin bytes") == 3, done.stdout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_the_perturbed_linear_equals_a_linear_on_the_perturbed_weight(dtype):
    """y = x W^T + b + c (x V) N^T against F.linear with W + c N V^T formed by lowrank_combine_ (fp32), and W
    untouched."""
    weight, basis = _weight_and_basis(24, 40, 8, dtype)
    bias = torch.randn(24, generator=torch.Generator().manual_seed(3)).to(dtype).to(DEVICE)
    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(4)).to(dtype).to(DEVICE)
    before = weight.clone()
    y = zk.lowrank_perturbed_linear(x, weight, basis, bias, seed=12, scale=0.1, stream=2, tensor_id=6)
    assert torch.equal(weight, before) and y.dtype == dtype and y.shape == (3, 5, 24)
    moved = weight.float().clone()
    zk.lowrank_combine_(moved, basis, seed=12, coeffs=[0.1], streams=[2], tensor_ids=[6])
    expected = torch.nn.functional.linear(x.float(), moved, bias.float())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.float(), expected, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="x has shape \\(3, 5, 40\\) and basis \\(39, 8\\)"):
        zk.lowrank_perturbation(x, basis[:39], 24, seed=0, scale=1.0)


def test_lowrank_delta_with_a_given_projection_equals_its_own_and_a_wrong_one_is_refused():
    gen = torch.Generator().manual_seed(4)
    x, basis, factor = torch.randn(3, 5, 10, generator=gen), torch.randn(10, 4, generator=gen), torch.randn(7, 4, generator=gen)
    xv = zk.lowrank_project(x, basis)
    torch.testing.assert_close(xv.double(), x.double() @ basis.double(), rtol=1e-5, atol=1e-5)
    assert torch.equal(zk.lowrank_delta(x, basis, factor, scale=0.3, xv=xv), zk.lowrank_delta(x, basis, factor, scale=0.3))
    with pytest.raises(ValueError, match=r"xv has shape \(3, 5, 3\) and dtype torch.float32: it must be lowrank_project"):
        zk.lowrank_delta(x, basis, factor, scale=0.3, xv=xv[..., :3])
    with pytest.raises(ValueError, match="xv has shape .* and dtype torch.float64"):
        zk.lowrank_delta(x, basis, factor, scale=0.3, xv=xv.double())


def test_lowrank_delta_applies_a_given_factor_as_lowrank_perturbation_applies_n():
    """lowrank_delta(x, V, F) = scale (x V) F^T (float64 check on fresh random inputs); with F = N (the stream
    lowrank_perturbation draws) the two agree exactly; mismatched shapes are refused naming all three."""
    _, basis = _weight_and_basis(24, 40, 8, torch.float32)
    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    factor = torch.randn(24, 8, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    got = zk.lowrank_delta(x, basis, factor, scale=0.3)
    expected = 0.3 * (x.double() @ basis.double()) @ factor.double().T
    assert got.dtype == torch.float32 and got.shape == (3, 5, 24)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    n = zk.normal(24 * 8, seed=5, stream=1, tensor_id=2, device=DEVICE).view(24, 8)
    assert torch.equal(zk.lowrank_delta(x, basis, n, scale=0.3),
                       zk.lowrank_perturbation(x, basis, 24, seed=5, scale=0.3, stream=1, tensor_id=2))
    with pytest.raises(ValueError, match="factor \\(24, 7\\)"):
        zk.lowrank_delta(x, basis, factor[:, :7], scale=1.0)


@pytest.mark.parametrize("rank", [1, 5, 40])  # 40: the CUDA kernel's rank chunks of 32 twice
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_lowrank_delta_add_adds_the_delta_in_float32_with_one_rounding(dtype, rank, backend):
    """output += scale (x V) F^T in place against the float64 sum rounded once into output's dtype (tolerance:
    one unit in the last place of that dtype, 2^-23 / 2^-7 / 2^-10 relative; fp32 adds 1e-5 for the product's
    own rounding). Fresh random inputs, a shape that leaves partial tiles in both dimensions; the delta is the
    size of the output, so a missing or partial add fails."""
    gen = torch.Generator().manual_seed(10 + rank)
    x = torch.randn(3, 13, 20, generator=gen).to(dtype).to(DEVICE)
    basis = torch.randn(20, rank, generator=gen).to(DEVICE) / 20 ** 0.5
    factor = torch.randn(150, rank, generator=gen).to(DEVICE)
    output = torch.randn(3, 13, 150, generator=gen).to(dtype).to(DEVICE)
    expected = output.double() + 0.7 * (x.double() @ basis.double()) @ factor.double().T
    ran = zk.lowrank_delta_add_(output, x, basis, factor, scale=0.7, backend=backend)
    assert ran == backend
    assert output.dtype == dtype
    ulp = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}[dtype]
    atol = 1e-5 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(output.double(), expected.to(dtype).double(), rtol=max(ulp, 1e-5), atol=atol)


def test_lowrank_delta_add_gives_the_same_bits_for_2d_and_strided_operands(backend):
    """A 2-d output with its xv (the flat path, no views made) and strided xv and factor (copied to contiguous
    before the launch) give bit for bit what the [3, 13, 150] output with contiguous operands gets."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 13, 20, generator=gen).bfloat16().to(DEVICE)
    basis = torch.randn(20, 5, generator=gen).to(DEVICE) / 20 ** 0.5
    factor = torch.randn(150, 5, generator=gen).to(DEVICE)
    output = torch.randn(3, 13, 150, generator=gen).bfloat16().to(DEVICE)
    xv = zk.lowrank_project(x, basis)
    flat, strided = output.reshape(39, 150).clone(), output.clone()
    zk.lowrank_delta_add_(output, x, basis, factor, scale=0.7, xv=xv, backend=backend)
    zk.lowrank_delta_add_(flat, x.reshape(39, 20), basis, factor, scale=0.7, xv=xv.reshape(39, 5), backend=backend)
    xv_strided, factor_strided = xv.transpose(0, 2).contiguous().transpose(0, 2), factor.T.contiguous().T
    assert not xv_strided.is_contiguous() and not factor_strided.is_contiguous()
    zk.lowrank_delta_add_(strided, x, basis, factor_strided, scale=0.7, xv=xv_strided, backend=backend)
    assert torch.equal(flat, output.reshape(39, 150)) and torch.equal(strided, output)
    assert not torch.equal(output, torch.zeros_like(output))


def test_lowrank_delta_add_auto_takes_the_measured_backend_where_it_can_and_fused_ones_refuse_the_rest():
    """"auto" runs the backend measured for the device and rank class on a contiguous output that autograd does
    not record (on the CPU the reference, as Triton there is its interpreter), and the reference for a
    non-contiguous output and one autograd records (the same values; the gradient flows); an explicit fused
    backend (triton, cuda) refuses both, and a float64 output, before writing."""
    gen = torch.Generator().manual_seed(5)
    x, basis, factor = torch.randn(6, 10, generator=gen).to(DEVICE), torch.randn(10, 2, generator=gen).to(DEVICE), \
        torch.randn(9, 2, generator=gen).to(DEVICE)
    plain = torch.randn(6, 9, generator=gen).to(DEVICE)
    expected = plain + (x @ basis) @ factor.T
    measured = backends.resolve("auto", DEVICE, backends.delta_add_class(2)) if ON_GPU else "reference"
    assert zk.lowrank_delta_add_(plain, x, basis, factor, scale=1.0) == measured
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
    wide = torch.randn(9, 6, generator=gen).to(DEVICE)
    expected = wide.T + (x @ basis) @ factor.T
    assert zk.lowrank_delta_add_(wide.T, x, basis, factor, scale=1.0) == "reference"
    torch.testing.assert_close(wide.T, expected, rtol=1e-5, atol=1e-5)
    weight = torch.randn(9, 10, generator=gen).to(DEVICE).requires_grad_()
    y = torch.nn.functional.linear(x, weight)
    assert zk.lowrank_delta_add_(y, x, basis, factor, scale=0.5) == "reference"
    y.sum().backward()
    torch.testing.assert_close(weight.grad, x.sum(0).expand(9, 10), rtol=1e-5, atol=1e-5)
    for fused in [b for b in BACKENDS if b != "reference"]:
        before = wide.clone()
        with pytest.raises(ValueError, match="contiguous: False, recorded: False"):
            zk.lowrank_delta_add_(wide.T, x, basis, factor, scale=1.0, backend=fused)
        assert torch.equal(wide, before)
        with pytest.raises(ValueError, match="contiguous: True, recorded: True"):
            zk.lowrank_delta_add_(torch.nn.functional.linear(x, weight), x, basis, factor, scale=1.0,
                                  backend=fused)
        wide64 = wide.double().contiguous()
        with pytest.raises(ValueError, match="output torch.float64"):
            zk.lowrank_delta_add_(wide64.T.contiguous(), x.double(), basis.double(), factor, scale=1.0, backend=fused)


def test_lowrank_delta_add_refuses_a_wrong_output_before_writing():
    gen = torch.Generator().manual_seed(3)
    x, basis, factor = torch.randn(4, 10, generator=gen), torch.randn(10, 1, generator=gen), torch.randn(7, 1, generator=gen)
    output = torch.randn(4, 8, generator=gen)
    before = output.clone()
    with pytest.raises(ValueError, match=r"output has shape \(4, 8\): need \(4, 7\)"):
        zk.lowrank_delta_add_(output, x, basis, factor, scale=1.0)
    with pytest.raises(ValueError, match="output is torch.int32"):
        zk.lowrank_delta_add_(torch.zeros(4, 7, dtype=torch.int32), x, basis, factor, scale=1.0)
    with pytest.raises(ValueError, match=r"factor \(7, 2\)"):
        zk.lowrank_delta_add_(output[:, :7], x, basis, torch.randn(7, 2), scale=1.0)
    with pytest.raises(ValueError, match="x on cpu, basis on meta, factor on cpu\\): need one device"):
        zk.lowrank_delta_add_(output[:, :7], x, basis.to("meta"), factor, scale=1.0)
    with pytest.raises(ValueError, match="xv on meta"):
        zk.lowrank_delta(x, basis, factor, scale=1.0, xv=zk.lowrank_project(x, basis).to("meta"))
    assert torch.equal(output, before)
