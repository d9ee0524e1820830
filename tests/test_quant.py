"""The weight-only quantized linears (ZO-Act's frozen bases): round-to-nearest error bounds, 4-bit packing,
forward against F.linear on the dequantized weight, bad input refused before the model changes."""
import pytest
import torch

from zokernels.quant import Int4WeightOnlyLinear, Int8WeightOnlyLinear, quantize_linears


def _linear(out_features, in_features, seed=0):
    torch.manual_seed(seed)
    linear = torch.nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.mul_(torch.linspace(0.1, 3.0, in_features))  # column groups of different scales
    return linear


def test_int4_codes_pack_two_per_byte_and_dequantize_within_half_a_step():
    linear = _linear(6, 64)
    layer = Int4WeightOnlyLinear.from_linear(linear, group_size=16)
    w = linear.weight.detach().float()
    assert layer.packed.dtype == torch.uint8 and layer.packed.shape == (6, 32) and layer.scale.shape == (6, 4)
    step = layer.scale.repeat_interleave(16, dim=1)  # each column's group scale
    expected_q = torch.round(w / step).clamp(-7, 7)
    assert torch.equal(layer.q.float(), expected_q) and layer.q.abs().max() == 7
    assert torch.equal((layer.packed & 0x0F).float() - 8, expected_q[:, 0::2])  # column 2 j: low nibble
    assert torch.equal((layer.packed >> 4).float() - 8, expected_q[:, 1::2])
    error = (layer.dequantized() - w).abs()
    assert (error <= step / 2 * (1 + 1e-6)).all() and error.max() > 0
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.dequantized(), linear.bias),
                               rtol=0, atol=0)
    assert torch.equal(layer(x.bfloat16()), torch.nn.functional.linear(
        x.bfloat16(), layer.dequantized(torch.bfloat16), linear.bias.bfloat16()))


def test_int8_dequantizes_within_half_a_step_per_row():
    linear = _linear(6, 40)
    layer = Int8WeightOnlyLinear.from_linear(linear)
    w = linear.weight.detach().float()
    error = (layer.dequantized() - w).abs()
    assert (error <= layer.scale / 2 * (1 + 1e-6)).all() and error.max() > 0
    assert layer.q.abs().max() == 127


def test_bad_quantization_requests_are_refused_before_the_model_changes():
    model = torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    with pytest.raises(ValueError, match="in_features = 8 is not a multiple of group_size = 32"):
        quantize_linears(model, ["0", "2"], bits=4)
    with pytest.raises(ValueError, match="'1' is a ReLU, not a torch.nn.Linear"):
        quantize_linears(model, ["0", "1"], bits=8)
    with pytest.raises(ValueError, match="bits must be 4 or 8, got 3"):
        quantize_linears(model, ["0"], bits=3)
    assert all(type(m) in (torch.nn.Linear, torch.nn.ReLU) for m in model)
    with pytest.raises(ValueError, match="group_size must be an even int >= 2, got 3"):
        Int4WeightOnlyLinear.from_linear(model[0], group_size=3)
    with pytest.raises(ValueError, match="packed uint8"):
        Int4WeightOnlyLinear(torch.zeros(4, 8, dtype=torch.int8), torch.ones(4, 1))
    quantize_linears(model, ["0", "2"], bits=4, group_size=8)
    assert isinstance(model[0], Int4WeightOnlyLinear) and isinstance(model[2], Int4WeightOnlyLinear)
    assert model[0].group_size == 8 and model[0].in_features == 32 and model[0].out_features == 8
