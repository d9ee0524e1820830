"""ZO-Act: one-shot bases, an unchanged model at the start, training on a frozen (also int8) base, merge,
alignment with the gradient against MeZO, resume, bad input."""
import copy

import pytest
import torch

import zokernels as zk
from zokernels.quant import Int4WeightOnlyLinear, Int8WeightOnlyLinear, quantize_linears
from zokernels.zo.subspace import target_linears
from zokernels.zo import PerturbedEvaluator
from zokernels.zo.subspace import SharedProjection
from zokernels.zo.zoact import CoefficientPerturbation, ZOActLinear

from .zo_problems import tiny_opt


def test_attaching_leaves_the_model_unchanged_and_bases_are_the_calibration_svd():
    model, closure = tiny_opt(torch.bfloat16)
    first = closure().item()
    captured = {}
    target = model.model.decoder.layers[1].fc2
    def capture(module, args):
        captured.setdefault("x", args[0].detach().float())

    handle = target.register_forward_pre_hook(capture)
    opt = zk.optim.ZOAct(model, lr=1e-2, rank=6, calibration=closure)
    handle.remove()
    assert closure().item() == first
    layer = model.model.decoder.layers[1].fc2
    assert isinstance(layer, ZOActLinear) and layer.base is target
    x = captured["x"].reshape(-1, captured["x"].shape[-1]).double()
    top = torch.linalg.svd(x, full_matrices=False).Vh[:6].T
    torch.testing.assert_close(layer.basis.double() @ layer.basis.double().T, top @ top.T, atol=1e-5, rtol=0)
    assert len(opt.layers) == 12 and all(p.dtype == torch.float32 for p in opt.param_groups[0]["params"])


def test_layers_fed_one_input_share_one_basis_and_one_projection():
    """q/k/v read the same hidden states: one basis tensor, one SharedProjection (x V once per input); out_proj,
    fc1 and fc2 read other tensors: their own. The loss equals that of unshared layers with copied bases."""
    model, closure = tiny_opt(torch.float32)
    opt = zk.optim.ZOAct(model, lr=1e-2, rank=4, calibration=closure)
    layers = dict(opt.layers)
    for block in range(2):
        attn = f"model.decoder.layers.{block}.self_attn."
        q, k, v, out = (layers[attn + n] for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
        assert q.basis is k.basis is v.basis and q.projection is k.projection is v.projection
        fc1, fc2 = layers[f"model.decoder.layers.{block}.fc1"], layers[f"model.decoder.layers.{block}.fc2"]
        assert len({id(m.projection) for m in (q, out, fc1, fc2)}) == 4
    for _, layer in opt.layers:  # nonzero coefficients, so the low-rank term matters
        layer.coeff.data.normal_(generator=torch.Generator().manual_seed(3))
    shared = closure().item()
    calls = []
    for _, layer in opt.layers:
        layer.basis = layer.basis.clone()
        layer.projection = SharedProjection()
        real = layer.projection.__call__
        layer.projection = lambda x, basis, real=real: calls.append(1) or real(x, basis)
    assert closure().item() == shared
    assert len(calls) == len(opt.layers)


def test_a_shared_projection_recomputes_for_a_new_or_modified_input_or_basis():
    projection, basis = SharedProjection(), torch.randn(6, 2)
    x = torch.randn(5, 6)
    first = projection(x, basis)
    assert projection(x, basis) is first
    x.add_(1.0)
    torch.testing.assert_close(projection(x, basis), x @ basis)
    other = torch.randn(6, 2)
    torch.testing.assert_close(projection(x, other), x @ other)
    y = x.clone()
    assert projection(y, other) is not projection(x, other)
    z = torch.randn(5, 6, requires_grad=True)  # under autograd: never cached (no graph kept past its forward)
    assert projection(z, other) is not projection(z, other)
    with torch.no_grad():
        assert projection(z, other) is projection(z, other)


def test_coefficient_perturbation_evaluates_as_the_exact_evaluator_and_never_writes_c():
    """Bit-identical losses to PerturbedEvaluator's exact evaluation of the same C's (same z, same tensor ids),
    C unchanged, and the layers read C again afterwards, also after a closure that raised."""
    model, closure = tiny_opt(torch.bfloat16)
    opt = zk.optim.ZOAct(model, lr=1e-2, rank=4, calibration=closure)
    coeffs = [layer.coeff for _, layer in opt.layers]
    for c in coeffs:
        c.data.normal_(generator=torch.Generator().manual_seed(5)).mul_(0.1)
    before = [c.detach().clone() for c in coeffs]
    perturbation = CoefficientPerturbation([layer for _, layer in opt.layers])
    evaluator = PerturbedEvaluator([coeffs])
    for seed, scale in [(1, 1e-2), (2, -3e-2)]:
        got = perturbation.loss(closure, seed=seed, stream=0, scale=scale)
        assert got == evaluator.loss(closure, seed=seed, stream=0, scale=scale)
        assert got != closure().item()
    assert all(torch.equal(a, c) for a, c in zip(before, coeffs))

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        perturbation.loss(failing, seed=1, scale=1e-2)
    assert all(layer.perturbed_coeff is None for _, layer in opt.layers)


@pytest.mark.parametrize("inner", ["adam", "sgd"])
def test_training_lowers_the_loss_and_never_writes_the_base(inner):
    model, closure = tiny_opt(torch.bfloat16)
    first = closure().item()
    opt = zk.optim.ZOAct(model, lr=2e-2 if inner == "adam" else 0.5, eps=1e-2, rank=8, calibration=closure, inner=inner)
    bases = [layer.base.weight.detach().clone() for _, layer in opt.layers]
    for _ in range(60):
        opt.step(closure)
    assert closure().item() < first - 0.05, (first, closure().item())
    assert all(torch.equal(b, layer.base.weight) for b, (_, layer) in zip(bases, opt.layers))


@pytest.mark.parametrize("bits, layer_type, stored", [(8, Int8WeightOnlyLinear, "q"),
                                                        (4, Int4WeightOnlyLinear, "packed")])
def test_a_quantized_base_trains_through_zoact_and_stays_frozen(bits, layer_type, stored):
    model, closure = tiny_opt(torch.float32)
    quantize_linears(model, [n for n, _ in target_linears(model)], bits=bits)
    assert isinstance(model.model.decoder.layers[0].fc1, layer_type)
    first = closure().item()
    opt = zk.optim.ZOAct(model, lr=2e-2, eps=1e-2, rank=8, calibration=closure)
    kept = [getattr(layer.base, stored).clone() for _, layer in opt.layers]
    for _ in range(60):
        opt.step(closure)
    assert closure().item() < first - 0.05, (first, closure().item())
    assert all(torch.equal(a, getattr(layer.base, stored)) for a, (_, layer) in zip(kept, opt.layers))
    with pytest.raises(ValueError, match=f"cannot merge into a {layer_type.__name__}: merge needs a floating-point"):
        opt.merge()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)], ids=str)
def test_merge_folds_w0_plus_c_vt_into_plain_linears(dtype, tol):
    """fp32: the merged model's loss equals the wrapped one's to 1e-5; bf16 (stochastic rounding of the merged
    weights): to 3e-2."""
    model, closure = tiny_opt(dtype)
    opt = zk.optim.ZOAct(model, lr=5e-2, eps=1e-2, rank=8, calibration=closure)
    for _ in range(30):
        opt.step(closure)
    wrapped = closure().item()
    layer = opt.layers[0][1]
    expected = layer.base.weight.detach().double() + layer.coeff.detach().double() @ layer.basis.double().T
    opt.merge()
    assert not any(isinstance(m, ZOActLinear) for m in model.modules())
    assert abs(closure().item() - wrapped) <= tol * abs(wrapped)
    merged = model.get_submodule(opt.layers[0][0]).weight.detach().double()
    assert (merged - expected).abs().max() <= (2e-6 if dtype == torch.float32 else 2 ** -7 * expected.abs().max())


def test_zoact_updates_align_with_the_gradient_better_than_mezo():
    """At two forward passes a step, one step's update of the effective weights W0 + C V^T (Adam's first step is
    sign-like, so SGD) against autograd's gradient of the targeted weights, mean over 100 seeds."""
    cos = {"zoact": 0.0, "mezo": 0.0}
    seeds = range(100)
    for seed in seeds:
        model, closure = tiny_opt(torch.float32)
        layers = target_linears(model)
        weights = [m.weight for _, m in layers]
        with torch.enable_grad():
            grad = torch.cat([g.reshape(-1).double() for g in torch.autograd.grad(closure(), weights)])
        start = [w.detach().clone() for w in weights]
        mezo = zk.optim.MeZO(weights, lr=1.0, eps=1e-4, seed=seed, rounding="nearest")
        mezo.step(closure)
        step = torch.cat([(w0 - w.detach()).reshape(-1).double() for w0, w in zip(start, weights)])
        cos["mezo"] += torch.nn.functional.cosine_similarity(step, grad, dim=0).item() / len(seeds)
        with torch.no_grad():
            for w, w0 in zip(weights, start):
                w.copy_(w0)
        opt = zk.optim.ZOAct(model, lr=1.0, eps=1e-4, rank=4, calibration=closure, inner="sgd", seed=seed)
        opt.step(closure)
        step = torch.cat([-(layer.coeff.detach().double() @ layer.basis.double().T).reshape(-1) for _, layer in opt.layers])
        cos["zoact"] += torch.nn.functional.cosine_similarity(step, grad, dim=0).item() / len(seeds)
    assert cos["mezo"] > 0 and cos["zoact"] > 1.5 * cos["mezo"], cos


def test_a_resumed_run_continues_bit_for_bit():
    model, closure = tiny_opt(torch.bfloat16)
    opt = zk.optim.ZOAct(model, lr=1e-2, rank=4, calibration=closure, seed=2)
    for _ in range(2):
        opt.step(closure)
    checkpoint = copy.deepcopy((model.state_dict(), opt.state_dict()))
    for _ in range(3):
        opt.step(closure)
    straight = [layer.coeff.detach().clone() for _, layer in opt.layers]
    model2, closure2 = tiny_opt(torch.bfloat16)
    opt2 = zk.optim.ZOAct(model2, lr=1e-2, rank=4, calibration=closure2, seed=0)
    model2.load_state_dict(checkpoint[0])
    opt2.load_state_dict(checkpoint[1])
    for _ in range(3):
        opt2.step(closure2)
    assert all(torch.equal(a, layer.coeff) for a, (_, layer) in zip(straight, opt2.layers))


@pytest.mark.parametrize("make, error", [
    (lambda m, c: zk.optim.ZOAct(m, lr=0.1, rank=33, calibration=c), "rank 33 is larger than d_in = 32 of layer"),
    (lambda m, c: zk.optim.ZOAct(m, lr=0.1, rank=4, calibration=c, targets="nope"), "no linear layer of OPTForCausalLM matches"),
    (lambda m, c: zk.optim.ZOAct(m, lr=0.1, rank=4, calibration=c, inner="lion"), "inner must be 'adam' or 'sgd'"),
    (lambda m, c: zk.optim.ZOAct(m, lr=0.1, rank=4, calibration=None), "calibration must be a callable"),
    (lambda m, c: zk.optim.ZOAct(m, lr=-0.1, rank=4, calibration=c), "lr must be a finite number >= 0"),
    (lambda m, c: zk.optim.ZOAct(m, lr=0.1, eps=0.0, rank=4, calibration=c), "eps must be a finite number > 0"),
    (lambda m, c: zk.optim.ZOAct(m, lr=0.1, rank=4, calibration=lambda: m(input_ids=torch.zeros(1, 2, dtype=torch.long))),
     "rank 4 is larger than the 2 calibration tokens layer 'model.decoder.layers.0.self_attn.k_proj' saw"),
])
def test_bad_settings_are_refused_and_the_model_is_left_alone(make, error):
    model, closure = tiny_opt(torch.float32)
    with pytest.raises(ValueError, match=error):
        make(model, closure)
    assert not any(isinstance(m, ZOActLinear) for m in model.modules())


def test_an_sgd_step_moves_each_coefficient_by_minus_lr_g_z():
    """The gradient handed to the inner optimizer is g z_i, z_i the stream of C_i (stream 0, tensor id = its
    position): one SGD step equals C_i - lr g z_i, with g the step's projected gradient."""
    model, closure = tiny_opt(torch.float32)
    opt = zk.optim.ZOAct(model, lr=0.3, eps=1e-2, rank=4, calibration=closure, inner="sgd")
    coeffs = list(opt.param_groups[0]["params"])
    for c in coeffs:  # start away from zero so that the step is not the whole value
        c.data.normal_(generator=torch.Generator().manual_seed(1))
    before = [c.detach().clone() for c in coeffs]
    opt.step(closure)
    result = opt.last_result
    g = result.projected_grad[0]
    assert g != 0.0 and not result.skipped
    for i, (c, c0) in enumerate(zip(coeffs, before)):
        z = zk.normal(c.numel(), seed=result.seed, stream=0, tensor_id=i, device=c.device).view_as(c)
        torch.testing.assert_close(c.detach(), c0 - 0.3 * g * z, rtol=1e-6, atol=1e-7)
        assert c.grad is None


def test_a_small_gram_budget_takes_more_calibration_passes_and_gives_the_same_bases():
    """gram_bytes bounds the float64 Gram matrices held at once: a first pass finds the layers that share an input,
    then one pass per budget's worth of distinct inputs. A budget below every matrix gives each distinct input a
    pass of its own (2 blocks x (q/k/v, out_proj, fc1, fc2) = 8, plus the first); the bases are the same bits as
    with the default budget (one Gram pass), and q/k/v still share one."""
    results = {}
    for budget in (zk.zo.GRAM_BYTES, 1):
        model, closure = tiny_opt(torch.float32)
        calls = []
        opt = zk.optim.ZOAct(model, lr=1e-2, rank=4, calibration=lambda: calls.append(1) or closure(),
                             gram_bytes=budget)
        results[budget] = (len(calls), {name: layer.basis for name, layer in opt.layers})
        layers = dict(opt.layers)
        attn = "model.decoder.layers.0.self_attn."
        assert layers[attn + "q_proj"].basis is layers[attn + "k_proj"].basis is layers[attn + "v_proj"].basis
    (calls_default, default), (calls_small, small) = results[zk.zo.GRAM_BYTES], results[1]
    assert (calls_default, calls_small) == (2, 9)
    assert default.keys() == small.keys() and all(torch.equal(default[n], small[n]) for n in default)


@pytest.mark.parametrize("budget", [0, -5, 2.5, True, "1GB"])
def test_a_bad_gram_budget_is_refused_and_the_model_is_left_alone(budget):
    model, closure = tiny_opt(torch.float32)
    with pytest.raises(ValueError, match=r"gram_bytes must be an int >= 1 \(bytes of Gram matrices held at once\)"):
        zk.optim.ZOAct(model, lr=0.1, rank=4, calibration=closure, gram_bytes=budget)
    assert not any(isinstance(m, ZOActLinear) for m in model.modules())
