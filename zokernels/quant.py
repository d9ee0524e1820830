"""Minimal weight-only quantized linear layers: the frozen bases that ZO-Act trains around.

- Int8WeightOnlyLinear: per-output-row absmax scales, W ~= q * scale, q int8 in [-127, 127].
- Int4WeightOnlyLinear: per-group absmax scales along the input dimension (groups of `group_size` columns),
  W ~= q * scale, q in [-7, 7] stored as two 4-bit codes (q + 8) per byte.

The forward dequantizes on the fly to the input's dtype (no fused low-bit kernel: these layers exist to show
and test that ZO-Act never writes its base). Both quantize by round-to-nearest, so |W - dequantized| <= scale / 2
element by element.
"""
import torch


class _WeightOnlyLinear(torch.nn.Module):
    """y = x W^T + bias with W = self.dequantized(x.dtype) formed on the fly; bias frozen."""

    LINEAR_LIKE = True  # zokernels.zo.subspace.target_linears treats it as a linear layer

    def __init__(self, out_features: int, in_features: int, bias):
        super().__init__()
        self.out_features, self.in_features = out_features, in_features
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.dequantized(x.dtype), bias)


class Int8WeightOnlyLinear(_WeightOnlyLinear):
    """y = x (q * scale)^T + bias. q: int8 [out, in] buffer; scale: float32 [out, 1] buffer; bias: frozen."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias=None):
        super().__init__(q.shape[0], q.shape[1], bias)
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> "Int8WeightOnlyLinear":
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        return cls(q, scale, linear.bias)

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        return (self.q.float() * self.scale).to(dtype)


class Int4WeightOnlyLinear(_WeightOnlyLinear):
    """y = x (q * scale)^T + bias with 4-bit q. packed: uint8 [out, in / 2] buffer, byte j of a row holding the
    codes q + 8 of columns 2 j (low nibble) and 2 j + 1 (high nibble); scale: float32 [out, in / group_size]
    buffer, one per group of group_size consecutive columns; bias: frozen. in_features must be even and a
    multiple of group_size."""

    def __init__(self, packed: torch.Tensor, scale: torch.Tensor, bias=None):
        if packed.dtype != torch.uint8 or packed.dim() != 2 or scale.dim() != 2 or scale.shape[0] != packed.shape[0]:
            raise ValueError(f"packed uint8 [out, in / 2] and scale [out, groups] needed, got {packed.dtype} "
                             f"{tuple(packed.shape)} and {tuple(scale.shape)}")
        in_features = 2 * packed.shape[1]
        if scale.shape[1] < 1 or in_features % scale.shape[1]:
            raise ValueError(f"{scale.shape[1]} scale groups do not divide in_features = {in_features}")
        super().__init__(packed.shape[0], in_features, bias)
        self.register_buffer("packed", packed)
        self.register_buffer("scale", scale)
        self.group_size = in_features // scale.shape[1]

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, group_size: int = 32) -> "Int4WeightOnlyLinear":
        out_features, in_features = linear.weight.shape
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
            raise ValueError(f"group_size must be an even int >= 2, got {group_size!r}")
        if in_features % group_size:
            raise ValueError(f"in_features = {in_features} is not a multiple of group_size = {group_size}")
        w = linear.weight.detach().float().view(out_features, in_features // group_size, group_size)
        scale = w.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / 7.0
        codes = (torch.round(w / scale).clamp(-7, 7) + 8).to(torch.uint8).view(out_features, in_features)
        return cls(codes[:, 0::2] | (codes[:, 1::2] << 4), scale.squeeze(2), linear.bias)

    @property
    def q(self) -> torch.Tensor:
        """int8 [out, in]: the 4-bit values in [-7, 7], unpacked."""
        low, high = self.packed & 0x0F, self.packed >> 4
        return torch.stack((low, high), dim=2).view(self.out_features, self.in_features).to(torch.int8) - 8

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        groups = self.q.float().view(self.out_features, -1, self.group_size) * self.scale.unsqueeze(2)
        return groups.view(self.out_features, self.in_features).to(dtype)


def quantize_linears(model: torch.nn.Module, names, *, bits: int = 8, group_size: int = 32) -> None:
    """Replace the named torch.nn.Linear submodules of `model` by Int8WeightOnlyLinear (bits=8) or
    Int4WeightOnlyLinear (bits=4, groups of group_size input columns), in place. Every name and layer is checked
    before the first is replaced."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits!r}")
    layers = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        if not isinstance(linear, torch.nn.Linear):
            raise ValueError(f"{name!r} is a {type(linear).__name__}, not a torch.nn.Linear")
        layers.append((parent, child, linear))
    quantized = [Int8WeightOnlyLinear.from_linear(linear) if bits == 8 else
                 Int4WeightOnlyLinear.from_linear(linear, group_size) for _, _, linear in layers]
    for (parent, child, _), layer in zip(layers, quantized):
        setattr(parent, child, layer)
