"""perturb_, combine_, perturbed_copy_: parity with the reference backend, rounding, sharding, bad input."""
import math

import pytest
import torch

import zokernels as zk
from zokernels import backends
from zokernels import contract as C

from .conftest import DEVICE
from .test_contract import Z_ATOL

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(37,), (8, 129), (3, 5, 7), (1,), (0,), (2053,)]  # odd sizes: tails, empty, tensors smaller than a unit


def _params(dtype, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen) * 2 + 0.5).to(dtype).to(DEVICE) for s in shapes]


def _ulp(x: torch.Tensor, dtype) -> torch.Tensor:
    """Spacing of `dtype` at |x| (float32 tensor)."""
    info = torch.finfo(dtype)
    mant = {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}[dtype]
    exp = torch.floor(torch.log2(x.abs().clamp_min(info.tiny)))
    return torch.exp2(exp.clamp_min(math.log2(info.tiny)) - mant)


def assert_parity(got, ref, dtype, coeff_abs_sum, dist):
    """Tolerance per dtype: Rademacher is bit-exact; Gaussian may differ by the special-function error of z
    (Z_ATOL per unit coefficient) before rounding, which can move a rounded result by one ulp of the dtype."""
    for g, r in zip(got, ref):
        if dist == "rademacher":
            assert torch.equal(g, r)
            continue
        g, r = g.float(), r.float()
        tol = coeff_abs_sum * Z_ATOL + _ulp(r, dtype) * (1 if dtype != torch.float32 else 4)
        assert ((g - r).abs() <= tol).all(), ((g - r).abs() - tol).max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_perturb_parity(fast_backend, dtype, dist, rounding):
    ref = _params(dtype)
    got = [t.clone() for t in ref]
    kw = dict(seed=2**40 + 3, scale=0.37, stream=5, dist=dist, rounding=rounding, tensor_ids=[9, 1, 2, 3, 4, 70])
    assert zk.perturb_(got, backend=fast_backend, **kw) == fast_backend
    zk.perturb_(ref, backend="reference", **kw)
    assert_parity(got, ref, dtype, 0.37, dist)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
@pytest.mark.parametrize("coeffs_on_device", [False, True])
def test_combine_parity(fast_backend, dtype, dist, coeffs_on_device):
    coeffs = [0.5, -1.25, 2e-3, 0.0, 1.0, -0.07, 3.0]
    streams = [4, 0, 2**31 - 1, 17, 5, 6, 100]
    ref = _params(dtype, seed=1)
    got = [t.clone() for t in ref]
    c = torch.tensor(coeffs, device=DEVICE) if coeffs_on_device else coeffs
    kw = dict(seed=11, coeffs=c, streams=streams, dist=dist, offsets=[0, 1, 2**32 + 5, 3, 0, 130])
    zk.combine_(got, backend=fast_backend, **kw)
    zk.combine_(ref, backend="reference", **kw)
    assert_parity(got, ref, dtype, sum(map(abs, coeffs)), dist)


def test_combine_many_directions(fast_backend):
    k = 64
    coeffs = torch.randn(k, generator=torch.Generator().manual_seed(3)).tolist()
    ref = _params(torch.float32, seed=2, shapes=[(300,), (41,)])
    got = [t.clone() for t in ref]
    zk.combine_(got, seed=5, coeffs=coeffs, backend=fast_backend)
    zk.combine_(ref, seed=5, coeffs=coeffs, backend="reference")
    assert_parity(got, ref, torch.float32, sum(map(abs, coeffs)), "gaussian")


def test_combine_equals_sequential_perturbs_in_fp32(backend):
    x = _params(torch.float32, shapes=[(1000,)])
    y = [t.clone() for t in x]
    zk.combine_(x, seed=3, coeffs=[0.1, -0.2, 0.3], streams=[7, 8, 9], backend=backend)
    for c, s in zip([0.1, -0.2, 0.3], [7, 8, 9]):
        zk.perturb_(y, seed=3, scale=c, stream=s, backend=backend)
    assert torch.allclose(x[0], y[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("src_dtype,dst_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
                                                 (torch.float32, torch.float16), (torch.float16, torch.float32)])
def test_perturbed_copy_parity_and_src_untouched(backend, src_dtype, dst_dtype):
    src = _params(src_dtype, seed=4)
    src_before = [t.clone() for t in src]
    dst = [torch.full_like(t, float("nan"), dtype=dst_dtype) for t in src]  # poisoned: every element must be written
    ref = [torch.empty_like(t) for t in dst]
    kw = dict(seed=8, scale=1e-3, stream=2, rounding="stochastic", rounding_seed=77)
    zk.perturbed_copy_(dst, src, backend=backend, **kw)
    zk.perturbed_copy_(ref, src, backend="reference", **kw)
    assert all(torch.equal(a, b) for a, b in zip(src, src_before))
    assert all(torch.isfinite(d).all() for d in dst)
    assert_parity(dst, ref, dst_dtype, 1e-3, "gaussian")


def test_mixed_dtype_list_equals_per_tensor_calls(backend):
    """One call over tensors of several dtypes (one launch per dtype on a GPU) keeps each tensor's id and offset."""
    mixed = [t[0] for t in (_params(dtype, seed=i, shapes=[(300 + i,)]) for i, dtype in enumerate(DTYPES * 2))]
    single = [t.clone() for t in mixed]
    ids, offs = [7, 3, 9, 1, 4, 2], [0, 5, 130, 2**33, 1, 64]
    kw = dict(seed=12, coeffs=[0.3, -0.1], rounding="stochastic")
    zk.combine_(mixed, tensor_ids=ids, offsets=offs, backend=backend, **kw)
    for t, i, o in zip(single, ids, offs):
        zk.combine_([t], tensor_ids=[i], offsets=[o], backend=backend, **kw)
    assert all(torch.equal(a, b) for a, b in zip(mixed, single))


def test_perturbed_copy_in_place_alias_equals_perturb(backend):
    a = _params(torch.bfloat16, seed=5)
    b = [t.clone() for t in a]
    zk.perturbed_copy_(a, a, seed=1, scale=0.01, backend=backend)
    zk.perturb_(b, seed=1, scale=0.01, backend=backend)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_sharded_update_is_bit_exact(backend, dist):
    """A tensor split into shards, each given its offset, gets exactly the values of the whole."""
    whole = _params(torch.bfloat16, seed=6, shapes=[(3001,)])[0]
    cuts = [0, 5, 128, 1003, 1004, 3001]
    shards = [whole[a:b].clone() for a, b in zip(cuts, cuts[1:])]
    kw = dict(seed=21, coeffs=[0.2, -0.4], dist=dist, rounding="stochastic")
    zk.combine_([whole], tensor_ids=[3], backend=backend, **kw)
    zk.combine_(shards, tensor_ids=[3] * len(shards), offsets=cuts[:-1], backend=backend, **kw)
    assert torch.equal(torch.cat(shards), whole)


def test_value_does_not_depend_on_dtype(backend):
    """The fp32 result rounded to bf16 is the bf16 result: z and the arithmetic do not depend on the dtype."""
    src = _params(torch.float32, seed=7, shapes=[(999,)])
    d32, d16 = torch.empty_like(src[0]), torch.empty_like(src[0], dtype=torch.bfloat16)
    zk.perturbed_copy_([d32], src, seed=3, scale=0.5, backend=backend)
    zk.perturbed_copy_([d16], src, seed=3, scale=0.5, backend=backend)
    assert torch.equal(d32.to(torch.bfloat16), d16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_stochastic_rounding_is_unbiased(dtype):
    """E[round(v)] = v: average many independently rounded copies of fixed fp32 values (incl. fp16 subnormals)."""
    gen = torch.Generator().manual_seed(8)
    v = torch.randn(512, generator=gen, dtype=torch.float64).float()
    if dtype == torch.float16:
        v[:128] *= 2.0**-16  # fp16 subnormal range
    out = torch.empty(v.shape, dtype=dtype)
    draws = 4000
    total = torch.zeros_like(v, dtype=torch.float64)
    for r in range(draws):
        zk.perturbed_copy_([out], [v], seed=0, scale=0.0, rounding="stochastic", rounding_seed=r, backend="reference")
        total += out.double()
    mean = total / draws
    lo = v.to(dtype).double()
    spacing = (torch.nextafter(v.abs(), torch.tensor(math.inf)).to(dtype).double() - lo.abs()).abs()
    spacing = torch.where(spacing > 0, spacing, torch.finfo(dtype).eps * lo.abs() + 2.0**-24)
    # each draw is v's floor or ceiling: variance <= spacing**2 / 4
    assert ((mean - v.double()).abs() <= 5 * spacing / (2 * math.sqrt(draws))).all()


def test_stochastic_rounding_keeps_small_updates(backend):
    """1000 adds of 1e-6 (times a fixed +-1 direction) to bf16 values near 1: stochastic rounding keeps the mean
    change within 2% of exact; round-to-nearest loses every one."""
    n = 2**18 if backend == "reference" or DEVICE.type == "cuda" else 2**10
    if n < 2**18:
        pytest.skip("statistics need 2**18 elements: too slow in the Triton interpreter (parity is tested above)")
    gen = torch.Generator().manual_seed(9)
    x0 = (0.5 + torch.rand(n, generator=gen) * 0.49).to(torch.bfloat16).to(DEVICE)
    z = zk.rademacher(n, seed=1, device=DEVICE)
    for rounding in ("stochastic", "nearest"):
        x = x0.clone()
        for step in range(1000):
            zk.perturb_([x], seed=1, scale=1e-6, dist="rademacher", rounding=rounding, rounding_seed=step,
                        backend=backend)
        change = ((x.double() - x0.double()) * z.double()).mean().item()
        if rounding == "stochastic":
            assert abs(change - 1e-3) < 0.02 * 1e-3
        else:
            assert change == 0.0


def test_stochastic_rounding_bits_match_reference(fast_backend):
    src = [torch.randn(3000, device=DEVICE) * s for s in (1.0, 2.0**-15)]
    src[1][:4] = torch.tensor([-0.0, 0.0, -2.0**-30, 2.0**-30], device=DEVICE)  # signed zeros, tiny values keep their sign
    # infinities and values past bf16's largest, each among finite values (no NaN in the same group of 8 elements)
    src[0][[100, 1000, 2000, 2500]] = torch.tensor([math.inf, -math.inf, 3.3e38, -3.39e38], device=DEVICE)
    for dtype in (torch.bfloat16, torch.float16):
        got = [torch.empty_like(t, dtype=dtype) for t in src]
        ref = [torch.empty_like(t, dtype=dtype) for t in src]
        kw = dict(seed=0, scale=0.0, rounding="stochastic", rounding_seed=2**50 + 1, offsets=[7, 2**35])
        zk.perturbed_copy_(got, src, backend=fast_backend, **kw)
        zk.perturbed_copy_(ref, src, backend="reference", **kw)
        assert all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(got, ref))  # bits: -0 != +0


def test_special_values_propagate(backend):
    x = torch.tensor([float("inf"), -float("inf"), float("nan"), 1.0, 65504.0], device=DEVICE)
    for dtype in (torch.bfloat16, torch.float16):
        for rounding in ("nearest", "stochastic"):
            t = x.to(dtype)
            zk.perturb_([t], seed=0, scale=1e-3, rounding=rounding, backend=backend)
            assert t[0] == math.inf and t[1] == -math.inf and torch.isnan(t[2]) and torch.isfinite(t[3])


def test_device_coeffs_with_nan_write_nothing(backend):
    x = _params(torch.bfloat16, seed=10)
    before = [t.clone() for t in x]
    zk.combine_(x, seed=1, coeffs=torch.tensor([0.1, float("nan")], device=DEVICE), backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(x, before))
    zk.combine_(x, seed=1, coeffs=torch.tensor([0.1, float("inf")], device=DEVICE), backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(x, before))


# ------------------------------------------------------------------------------------------------ bad input
def _bad_cases():
    ok = lambda: [torch.randn(10, device=DEVICE), torch.randn(3, 4, device=DEVICE)]  # noqa: E731
    return [
        ("int tensor", lambda: ok() + [torch.ones(5, dtype=torch.int32, device=DEVICE)], {}, TypeError, r"tensors\[2\].*int32"),
        ("bool tensor", lambda: ok() + [torch.ones(5, dtype=torch.bool, device=DEVICE)], {}, TypeError, r"tensors\[2\].*bool"),
        ("float64", lambda: ok() + [torch.ones(5, dtype=torch.float64, device=DEVICE)], {}, TypeError, r"tensors\[2\].*float64"),
        ("mixed devices", lambda: ok() + [torch.ones(5, device="meta")], {}, ValueError, r"tensors\[2\].*meta"),
        ("non-contiguous", lambda: ok() + [torch.randn(4, 6, device=DEVICE).t()], {}, ValueError, r"tensors\[2\].*contiguous"),
        ("overlap", lambda: (lambda b: ok() + [b[2:], b[:5]])(torch.randn(10, device=DEVICE)), {}, ValueError, "overlap"),
        ("negative seed", ok, {"seed": -1}, ValueError, "seed"),
        ("seed too big", ok, {"seed": 2**64}, ValueError, "seed"),
        ("bool seed", ok, {"seed": True}, TypeError, "seed"),
        ("float seed", ok, {"seed": 1.5}, TypeError, "seed"),
        ("K = 0", ok, {"coeffs": []}, ValueError, "K"),
        ("K = 0 tensor", ok, {"coeffs": torch.empty(0, device=DEVICE)}, ValueError, "K = 0"),
        ("nan coeff", ok, {"coeffs": [0.1, float("nan")]}, ValueError, r"coeffs\[1\]"),
        ("inf coeff", ok, {"coeffs": [float("inf")]}, ValueError, r"coeffs\[0\]"),
        ("coeffs on other device", ok, {"coeffs": torch.ones(2, device="meta")}, ValueError, "coeffs"),
        ("int coeffs tensor", ok, {"coeffs": torch.ones(2, dtype=torch.int64, device=DEVICE)}, TypeError, "coeffs"),
        ("reserved stream", ok, {"coeffs": [1.0], "streams": [2**31]}, ValueError, r"streams\[0\]"),
        ("streams length", ok, {"coeffs": [1.0, 2.0], "streams": [1]}, ValueError, "streams"),
        ("tensor_ids length", ok, {"tensor_ids": [0]}, ValueError, "tensor_ids"),
        ("tensor_id range", ok, {"tensor_ids": [0, 2**32]}, ValueError, r"tensor_ids\[1\]"),
        ("negative offset", ok, {"offsets": [0, -1]}, ValueError, r"offsets\[1\]"),
        ("dist", ok, {"dist": "uniform"}, ValueError, "dist"),
        ("rounding", ok, {"rounding": "down"}, ValueError, "rounding"),
        ("unknown backend", ok, {"backend": "cudnn"}, ValueError, "backend"),
        ("not a list", lambda: "weights", {}, TypeError, "tensors"),
    ]


@pytest.mark.parametrize("name,make,kwargs,exc,match", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_is_refused_before_any_write(name, make, kwargs, exc, match):
    tensors = make()
    before = [t.clone() for t in tensors if isinstance(t, torch.Tensor) and t.device.type != "meta"]
    args = dict(seed=1, coeffs=[0.5, 0.25])
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        zk.combine_(tensors, **args)
    after = [t for t in tensors if isinstance(t, torch.Tensor) and t.device.type != "meta"]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_bad_scale_and_copy_arguments():
    x = [torch.randn(10, device=DEVICE)]
    for scale, exc in ((float("nan"), ValueError), (float("-inf"), ValueError), ("0.1", TypeError)):
        with pytest.raises(exc, match="scale"):
            zk.perturb_(x, seed=0, scale=scale)
    with pytest.raises(ValueError, match="shape"):
        zk.perturbed_copy_([torch.empty(10, device=DEVICE)], [torch.randn(11, device=DEVICE)], seed=0, scale=1.0)
    with pytest.raises(ValueError, match="dst has 2 tensors"):
        zk.perturbed_copy_([torch.empty(1, device=DEVICE)] * 2, x, seed=0, scale=1.0)
    buf = torch.randn(20, device=DEVICE)
    with pytest.raises(ValueError, match="overlap"):  # dst partly overlapping src
        zk.perturbed_copy_([buf[5:15]], [buf[:10]], seed=0, scale=1.0)


def test_overlap_check_on_many_views_of_one_buffer():
    """Touching views of one buffer are disjoint; one element shared by two of 40 views, given out of order, is
    refused with both positions named, and nothing is written."""
    buf = torch.randn(400, device=DEVICE)
    views = [buf[10 * i:10 * i + 10] for i in range(40)]
    order = list(range(39, -1, -1))
    zk.perturb_([views[i] for i in order], seed=0, scale=0.0)
    before = buf.clone()
    shuffled = [views[i] for i in order]
    shuffled[7] = buf[10 * order[7] - 1:10 * order[7] + 9]  # one element of the view below it (position 8)
    with pytest.raises(ValueError, match=r"tensors\[7\] and tensors\[8\] overlap"):
        zk.perturb_(shuffled, seed=0, scale=1.0)
    assert torch.equal(buf, before)


def test_empty_list_is_a_no_op_that_still_checks_arguments():
    assert zk.perturb_([], seed=0, scale=1.0) is None
    for kwargs, match in (({"seed": -1}, "seed"), ({"dist": "uniform"}, "dist"), ({"backend": "cudnn"}, "backend")):
        with pytest.raises(ValueError, match=match):
            zk.perturb_([], **{"seed": 0, "scale": 1.0, **kwargs})


def test_backend_not_available_for_device():
    with pytest.raises(ValueError, match="not available for device meta"):
        zk.perturb_([torch.empty(4, device="meta")], seed=0, scale=1.0, backend="triton")


def test_auto_backend_and_env_override(monkeypatch):
    if DEVICE.type == "cuda":  # the measured choice for this GPU (auto_choices.json), else the first in order
        measured = backends._auto_choices().get(backends._device_name(DEVICE), {}).get(
            backends.op_class("gaussian", "nearest", 1))
        assert zk.backend_for(DEVICE) == (measured or "triton")
    else:
        assert zk.backend_for(DEVICE) == "reference"
    monkeypatch.setenv("ZOKERNELS_BACKEND", "reference")
    assert zk.backend_for(DEVICE) == "reference"
    x = [torch.randn(8, device=DEVICE)]
    assert zk.perturb_(x, seed=0, scale=1.0) == "reference"
    monkeypatch.setenv("ZOKERNELS_BACKEND", "nope")
    with pytest.raises(ValueError, match="nope"):
        zk.perturb_(x, seed=0, scale=1.0)


def test_stream_reservation_is_disjoint_from_directions():
    assert C.SR_STREAM >= C.MAX_STREAM
