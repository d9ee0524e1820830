"""zokernels.optim: param groups, the seed schedule, state_dict resume bit for bit, NaN/inf skips, bad input."""
import copy

import pytest
import torch

import zokernels as zk

from .zo_problems import DEVICES, mlp, tiny_opt

OPTIMIZERS = {
    "mezo": lambda params, **kw: zk.optim.MeZO(params, lr=1e-3, **kw),
    "bszo": lambda params, **kw: zk.optim.BSZO(params, lr=1e-3, k=3, **kw),
}


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def same_bits(a, b):
    return all(x.dtype == y.dtype and torch.equal(x.view(torch.uint8), y.view(torch.uint8)) for x, y in zip(a, b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("master_weights", [False, True])
def test_a_resumed_run_continues_bit_for_bit(name, master_weights, device):
    model, closure = tiny_opt(torch.bfloat16, device=device)
    opt = OPTIMIZERS[name](model.parameters(), master_weights=master_weights, seed=123)
    for _ in range(3):
        opt.step(closure)
    checkpoint = copy.deepcopy((model.state_dict(), opt.state_dict()))
    for _ in range(3):
        opt.step(closure)
    straight = snapshot(model)

    resumed_model, resumed_closure = tiny_opt(torch.bfloat16, device=device)
    resumed = OPTIMIZERS[name](resumed_model.parameters(), master_weights=master_weights, seed=999)
    resumed_model.load_state_dict(checkpoint[0])
    resumed.load_state_dict(checkpoint[1])
    for _ in range(3):
        resumed.step(resumed_closure)
    assert same_bits(straight, snapshot(resumed_model))
    assert resumed.steps == opt.steps == 6
    if name == "bszo":
        assert resumed.noise_var == opt.noise_var


def test_the_seed_schedule_is_deterministic_and_the_seed_matters():
    runs = []
    for seed in (5, 5, 6):
        model, closure = mlp(dtype=torch.bfloat16)
        opt = zk.optim.MeZO(model.parameters(), lr=1e-2, seed=seed)
        for _ in range(4):
            opt.step(closure)
        runs.append(snapshot(model))
    assert same_bits(runs[0], runs[1]) and not same_bits(runs[0], runs[2])


def test_param_groups_have_their_own_learning_rate():
    model, closure = mlp()
    first, second = model[0], model[2]
    opt = zk.optim.BSZO([{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.0}], lr=0.05, k=2)
    before_first, before_second = snapshot(first), snapshot(second)
    opt.step(closure)
    assert same_bits(before_second, snapshot(second))
    assert not same_bits(before_first, snapshot(first))


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("mode", ["exact", "inplace"])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_a_nan_or_inf_loss_skips_the_step_and_leaves_the_weights_bit_exact(name, mode, bad_value):
    model, closure = mlp(dtype=torch.float32)
    opt = OPTIMIZERS[name](model.parameters(), mode=mode)
    opt.step(closure)
    before = snapshot(model)
    calls = []

    def poisoned():
        calls.append(1)
        return closure() * (bad_value if len(calls) == 2 else 1.0)

    with pytest.warns(RuntimeWarning, match="step 1 skipped, a loss was NaN or inf \\(1 skipped so far\\)"):
        loss = opt.step(poisoned)
    assert loss != loss and opt.skipped_steps == 1 and opt.steps == 2
    if mode == "exact":
        assert same_bits(before, snapshot(model))
    else:  # fp32 inplace: the restore is exact up to one rounding per element
        for a, b in zip(before, snapshot(model)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make, error", [
    (lambda p: zk.optim.BSZO(p, lr=0.1, k=0), "k must be an int >= 1"),
    (lambda p: zk.optim.BSZO(p, lr=0.1, k=2.5), "k must be an int >= 1"),
    (lambda p: zk.optim.MeZO(p, lr=0.1, eps=0.0), "eps must be a finite number > 0"),
    (lambda p: zk.optim.MeZO(p, lr=0.1, eps=-1e-3), "eps must be a finite number > 0"),
    (lambda p: zk.optim.MeZO(p, lr=float("nan")), "lr must be a finite number >= 0"),
    (lambda p: zk.optim.MeZO(p, lr=-1.0), "lr must be a finite number >= 0"),
    (lambda p: zk.optim.MeZO(p, lr=0.1, mode="lazy"), "mode must be one of"),
    (lambda p: zk.optim.MeZO(p, lr=0.1, rounding="up"), "rounding must be one of"),
    (lambda p: zk.optim.MeZO(p, lr=0.1, seed=-1), "seed must be an int in \\[0, 2\\*\\*64\\)"),
    (lambda p: zk.optim.BSZO(p, lr=0.1, alpha=0.0), "alpha must be in \\(0, 1\\]"),
    (lambda p: zk.optim.BSZO(p, lr=0.1, noise_var=0.0), "noise_var must be a finite number > 0"),
    (lambda p: zk.optim.MeZO(p + [torch.nn.Parameter(torch.zeros(3, device="meta"))], lr=0.1),
     "parameter #4 \\(shape \\(3,\\), dtype torch.float32, device meta\\) is not on cpu like parameter #0"),
    (lambda p: zk.optim.MeZO(p + [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], lr=0.1),
     "parameter #4 .* dtype must be float32, float16 or bfloat16"),
    (lambda p: zk.optim.MeZO([], lr=0.1), "empty parameter list|got no parameters"),
])
def test_bad_settings_are_refused_at_construction(make, error):
    model, _ = mlp()
    with pytest.raises((ValueError, TypeError), match=error):
        make(list(model.parameters()))


def test_step_without_a_closure_is_refused():
    model, _ = mlp()
    opt = zk.optim.MeZO(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="MeZO.step needs a closure"):
        opt.step()


def test_a_state_dict_from_another_master_setting_is_refused():
    model, _ = mlp(dtype=torch.bfloat16)
    with_masters = zk.optim.MeZO(model.parameters(), lr=0.1, master_weights=True)
    without = zk.optim.MeZO(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="master weights do not match"):
        without.load_state_dict(with_masters.state_dict())
