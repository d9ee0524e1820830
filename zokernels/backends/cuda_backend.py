"""CUDA backend: the csrc/ kernels, reached through torch.ops.zokernels (TORCH_LIBRARY bindings).

The extension comes from the install (setup.py builds zokernels._C when a CUDA toolkit and a CUDA build of
torch are present) or is built at first use with ninja (cached by torch.utils.cpp_extension). Where neither
works, this backend reports itself unavailable with the reason, "auto" moves on to Triton, and one warning
says so. One launch per (dst dtype, src dtype) group, like the Triton backend; the same chunk spans.
"""
import functools
import warnings

import torch

from .. import _cuda_build
from .launch import (TableCache, chunk_spans, combine_by_dtype, direction_args, key_words, lowrank_blocks,
                     lowrank_direction_args, padded_rank, to_device)

NAME = "cuda"
CHUNK = 32 * 1024  # elements per block (a multiple of every GROUP); H100: 32K against 64K, bench/NOTES.md
GROUP = {"gaussian": 8, "rademacher": 128}  # spans start on these multiples of the global index (kernel groups)
_TABLES = TableCache()
_state = {"loaded": False, "error": None, "source": None, "max_tensors": None, "tc_geometry": None,
          "tc_half_min_rank": None, "ready_devices": set()}


def _load():
    """Load the extension once; returns the error (None when torch.ops.zokernels is ready)."""
    if _state["loaded"] or _state["error"] is not None:
        return _state["error"]
    try:
        try:
            from .. import _C as module  # prebuilt by setup.py
            _state["source"] = "prebuilt zokernels._C"
        except ImportError:
            from torch.utils.cpp_extension import load

            module = load(name="zokernels_cuda", sources=_cuda_build.SOURCES, extra_cuda_cflags=_cuda_build.NVCC_FLAGS,
                          extra_cflags=_cuda_build.CXX_FLAGS, verbose=False)
            _state["source"] = "JIT build (torch.utils.cpp_extension.load)"
        torch.ops.zokernels.combine_  # noqa: B018  (raises if the registration did not happen)
        _state["max_tensors"] = int(module.max_tensors_per_launch)
        _state["tc_geometry"] = {(rp, rounding): tuple(module.lowrank_tc_geometry(rp, rounding == "stochastic"))
                                 for rp in (8, 16, 32, 64) for rounding in ("nearest", "stochastic")}
        _state["tc_half_min_rank"] = int(module.lowrank_tc_half_min_rank)
        _state["loaded"] = True
    except Exception as exc:  # a missing toolkit, ninja or compiler: fall back, never crash
        _state["error"] = exc
        warnings.warn(f"zokernels: the CUDA extension could not be loaded or built ({type(exc).__name__}: {exc}); "
                      "backend 'cuda' is unavailable and 'auto' uses Triton", RuntimeWarning, stacklevel=3)
    return _state["error"]


def extension_source():
    """Where the loaded extension came from ("prebuilt zokernels._C" or the JIT build), None if not loaded."""
    return _state["source"] if _state["loaded"] else None


def max_tensors_per_launch():
    """Tensors one launch takes (csrc/zo_kernels.h kMaxTensorsPerLaunch as built: 512 with CUDA >= 12.1, else 128;
    their addresses travel as kernel parameters); None while the extension is not loaded."""
    return _state["max_tensors"] if _state["loaded"] else None


def unavailable_reason(device: torch.device):
    """None if this backend can run on `device`, else why not (for the error message). A device found ready is
    remembered (in _state), so the ops' per-call resolution skips the runtime queries after the first."""
    if device in _state.get("ready_devices", ()):
        return None
    if device.type != "cuda":
        return "the CUDA backend runs CUDA tensors only"
    if torch.version.cuda is None:
        return "this torch build has no CUDA"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    capability = torch.cuda.get_device_capability(device)
    if capability < _cuda_build.MIN_CAPABILITY:
        return (f"the device has compute capability {capability[0]}.{capability[1]}; the extension is built for "
                f"sm_{'/sm_'.join(_cuda_build.ARCHS)} (edit ARCHS in zokernels/_cuda_build.py and rebuild)")
    error = _load()
    if error is not None:
        return f"the extension could not be loaded or built: {type(error).__name__}: {error}"
    _state.setdefault("ready_devices", set()).add(device)
    return None


def chunk_rows(numels, tensor_ids, offsets, unit: int, chunk: int) -> torch.Tensor:
    """Host int64 [rows, 6] (tensor index, local0, numel, offset, tensor id, length): csrc/zo_perturb.cu's ChunkRow
    per span of <= chunk elements starting on multiples of `unit` of the global index (launch.chunk_spans)."""
    rows = [[t, local0, numels[t], offsets[t], tensor_ids[t], length]
            for t, local0, length in chunk_spans(numels, offsets, unit, chunk)]
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 6)


def _chunk_table(dsts, tensor_ids, offsets, dist):
    """chunk_rows of the launch on the tensors' device. It holds no addresses: it depends on sizes, ids and
    offsets only, and the op writes the tensors it is given."""
    numels = [d.numel() for d in dsts]
    key = (dsts[0].device, dist, CHUNK, tuple(zip(numels, tensor_ids, offsets)))
    return _TABLES.get_or_build(
        key, lambda: to_device(chunk_rows(numels, tensor_ids, offsets, GROUP[dist], CHUNK), dsts[0].device))


def _launch(dsts, srcs, *, seed, coeffs, streams, tensor_ids, offsets, dist, rounding, rounding_seed):
    coeff_arg, scale, stream_arg = direction_args(coeffs, streams, dsts[0].device)
    per_launch = max_tensors_per_launch()
    for lo in range(0, len(dsts), per_launch):
        part = slice(lo, lo + per_launch)
        table = _chunk_table(dsts[part], tensor_ids[part], offsets[part], dist)
        if table.shape[0] == 0:
            continue
        torch.ops.zokernels.combine_(dsts[part], srcs[part], table, coeff_arg, scale, stream_arg, streams[0],
                                     len(streams), *key_words(seed), *key_words(rounding_seed), dist == "gaussian",
                                     rounding == "stochastic")


combine = functools.partial(combine_by_dtype, _launch)  # reference.combine's contract, a launch per dtype pair


# (rows per block, columns per tile) of csrc/zo_lowrank.cu's fp32 FMA kernel (kLowrankRows, kLowrankCols); the
# TF32 tensor-core kernel's (for 16-bit weights at ranks <= LOWRANK_TC_MAX_RANK) depend on the padded rank
LOWRANK_FMA_GEOMETRY = (32, 256)
LOWRANK_TC_MAX_RANK = 64  # csrc/zo_kernels.h kTcMaxRank
LOWRANK_MIN_PROGRAMS = 1024  # as the Triton kernel: below this many row blocks, column tiles are split
# TF32 operands rounded to nearest (10 stored mantissa bits, unit roundoff 2^-11): a product of two is off by at
# most (2 2^-11 + 2^-22) of its size; then fp32 accumulation. -c gives exactly the opposite update (rounding is
# sign-symmetric), so perturb / restore cancel as with the FMA kernel.
TF32_PRODUCT_ERROR = 2.0**-10 + 2.0**-22


def lowrank_kernel(dtype, r) -> str:
    """Which kernel of csrc/zo_lowrank.cu takes a weight of `dtype` with a rank-r basis."""
    return "tensor_core" if dtype != torch.float32 and r <= LOWRANK_TC_MAX_RANK else "fma"


def lowrank_geometry(kernel, r_pad, rounding) -> tuple:
    """(rows per block, columns per tile) of `kernel` for a launch of padded rank r_pad with `rounding` ("nearest"
    or "stochastic"): the tensor-core kernel's as the extension was built (its lowrank_tc_geometry: wide (64, 128)
    blocks at low ranks, tall (128, 64) above, the prepared-fragment blocks (64, 128) at r = 16 and 32 and at r = 64
    stochastic; csrc/zo_kernels.h)."""
    if kernel == "fma":
        return LOWRANK_FMA_GEOMETRY
    return _state["tc_geometry"][r_pad, rounding]


def _lowrank_table(ws, ranks, tensor_ids, kernel, r_pad, rounding):
    """int64 [programs, 8] device table (t, row0, tile_begin, tile_end, d_out, d_in, r, tensor id) in `kernel`'s
    geometry for padded rank r_pad and `rounding`: no addresses, cached on the shapes, ranks and ids."""
    shapes = [tuple(w.shape) for w in ws]
    geometry = lowrank_geometry(kernel, r_pad, rounding)
    key = ("lowrank", geometry, ws[0].device, LOWRANK_MIN_PROGRAMS, tuple(zip(shapes, ranks, tensor_ids)))

    def build():
        blocks = lowrank_blocks(shapes, *geometry, LOWRANK_MIN_PROGRAMS)
        meta = torch.tensor([[d_out, d_in, r, tid] for (d_out, d_in), r, tid in zip(shapes, ranks, tensor_ids)],
                            dtype=torch.int64)
        return to_device(torch.cat([blocks, meta[blocks[:, 0]]], dim=1), ws[0].device)

    return _TABLES.get_or_build(key, build)


def lowrank_product_error(dtype) -> tuple:
    """(relative, underflow) as triton_backend's: float32 weights take the fp32 FMA kernel (no error beyond fp32
    accumulation); 16-bit weights the tensor-core kernel up to rank 64, FMA above. Its TF32 and fp16 products both
    round operands to 11 significant bits (TF32_PRODUCT_ERROR); the fp16 one (M per block and V per row, or per
    64-column piece at the extension's prepared rank, scaled by powers of two, each at most Triton's per-basis
    scale) adds underflow 2^-24 (max|V| sum_j |M_ij| + max|M|
    sum_j |V_cj|) where the extension has it (or is not loaded yet: the bound then covers both)."""
    if dtype == torch.float32:
        return 0.0, 0.0
    half = _state["tc_half_min_rank"] is None or _state["tc_half_min_rank"] <= LOWRANK_TC_MAX_RANK
    return TF32_PRODUCT_ERROR, 2.0**-24 if half else 0.0


def _float32(tensors):
    return [t.float().contiguous() for t in tensors]  # no copy where a tensor already is contiguous float32


def lowrank_combine(weights, bases, *, factors, seed, coeffs, streams, tensor_ids, rounding, rounding_seed):
    """reference.lowrank_combine's contract: one launch per (weight dtype, kernel, padded rank for the
    tensor-core kernel) group of up to max_tensors_per_launch() weights (lowrank_kernel says which kernel).
    Bases and explicit factors go to the kernel as float32 (a copy where they are not)."""
    regen = factors is None
    coeff_arg, scale, stream_arg, k, stream0 = lowrank_direction_args(factors, coeffs, streams, weights[0].device)
    groups = {}
    for t, (w, v) in enumerate(zip(weights, bases)):
        if w.numel():
            kernel = lowrank_kernel(w.dtype, v.shape[1])
            groups.setdefault((w.dtype, kernel, kernel == "tensor_core" and padded_rank(v.shape[1], 8)), []).append(t)
    per_launch = max_tensors_per_launch()
    for (_, kernel, r_pad), idx in groups.items():
        for lo in range(0, len(idx), per_launch):
            part = idx[lo:lo + per_launch]
            ws, vs = [weights[t] for t in part], _float32([bases[t] for t in part])
            table = _lowrank_table(ws, [v.shape[1] for v in vs], [tensor_ids[t] for t in part], kernel, r_pad,
                                   rounding)
            torch.ops.zokernels.lowrank_combine_(ws, vs, [] if regen else _float32([factors[t] for t in part]), table,
                                                 coeff_arg, scale, stream_arg, stream0, k, *key_words(seed),
                                                 *key_words(rounding_seed), rounding == "stochastic",
                                                 kernel == "tensor_core")


def lowrank_delta_add(output, xv, factor, scale):
    """reference.lowrank_delta_add's contract for a contiguous output [T, d_out] (float32, bf16 or fp16) and
    contiguous float32 xv [T, r] and factor [d_out, r]: one launch (csrc/zo_delta_add.cu), r FMAs per element,
    rounded to nearest once; autograd does not record it."""
    torch.ops.zokernels.lowrank_delta_add_(output, xv, factor, float(scale))


def stream_values(n, *, seed, stream, tensor_id, offset, dist, device):
    out = torch.zeros(n, dtype=torch.float32, device=device)
    _launch([out], [out], seed=seed, coeffs=[1.0], streams=[stream], tensor_ids=[tensor_id], offsets=[offset],
            dist=dist, rounding="nearest", rounding_seed=seed)
    return out


def philox4x32_10(c0, c1, c2, c3, seed: int):
    """Raw words through the device code (int64 tensors of 32-bit words in, out)."""
    c = torch.stack([torch.as_tensor(x, dtype=torch.int64) for x in (c0, c1, c2, c3)]).contiguous()
    return tuple(torch.ops.zokernels.philox_words(c, *key_words(seed)))
