"""A minimal weight-only int8 linear layer: the frozen, quantized base that ZO-Act trains around.

Per-output-row absmax scales: W ~= q * scale, q int8 in [-127, 127]. The forward dequantizes on the fly to the
input's dtype (no fused int8 kernel: this layer exists to show and test that ZO-Act never writes its base).
"""
import torch


class Int8WeightOnlyLinear(torch.nn.Module):
    """y = x (q * scale)^T + bias. q: int8 [out, in] buffer; scale: float32 [out, 1] buffer; bias: frozen."""

    LINEAR_LIKE = True  # zokernels.zo.subspace.target_linears treats it as a linear layer

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias=None):
        super().__init__()
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = q.shape

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> "Int8WeightOnlyLinear":
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        return cls(q, scale, linear.bias)

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        return (self.q.float() * self.scale).to(dtype)

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.dequantized(x.dtype), bias)


def quantize_linears(model: torch.nn.Module, names) -> None:
    """Replace the named torch.nn.Linear submodules of `model` by Int8WeightOnlyLinear, in place."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8WeightOnlyLinear.from_linear(getattr(parent, child)))
