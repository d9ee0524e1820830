"""Host-side pieces shared by the GPU backends: dtype groups (one launch each), chunk spans (one program or
block each), the table cache, the kernels' key words and direction arguments."""
import collections

import torch

from .. import contract as C


def combine_by_dtype(launch, dsts, srcs, *, tensor_ids, offsets, **kwargs):
    """Call launch(dsts, srcs, tensor_ids=..., offsets=..., **kwargs) once per (dst dtype, src dtype) pair
    (srcs None: in place): a kernel launch handles one such group."""
    srcs = dsts if srcs is None else srcs
    groups = collections.defaultdict(list)
    for t, (d, s) in enumerate(zip(dsts, srcs)):
        groups[(d.dtype, s.dtype)].append(t)
    for idx in groups.values():
        launch([dsts[t] for t in idx], [srcs[t] for t in idx], tensor_ids=[tensor_ids[t] for t in idx],
               offsets=[offsets[t] for t in idx], **kwargs)


def tensor_list_key(dsts, srcs, tensor_ids, offsets):
    """What a chunk table depends on: addresses, sizes, tensor ids and offsets of the list."""
    return tuple((d.data_ptr(), s.data_ptr(), d.numel(), tid, off) for d, s, tid, off in zip(dsts, srcs, tensor_ids, offsets))


def key_words(seed: int):
    """The Philox key words of a seed as signed 32-bit values (one kernel signature for every seed)."""
    return tuple(w - 2**32 if w >= 2**31 else w for w in C.split_seed(seed))


def direction_args(coeffs, streams, device):
    """(coeff tensor or None, scale, stream tensor or None): one coefficient travels as a scalar argument,
    several as a float32 device tensor; consecutive streams travel as streams[0] alone."""
    if isinstance(coeffs, torch.Tensor):
        coeff_arg, scale = coeffs, 0.0
    elif len(coeffs) == 1:
        coeff_arg, scale = None, float(coeffs[0])
    else:
        coeff_arg, scale = to_device(torch.tensor(coeffs, dtype=torch.float32), device), 0.0
    consecutive = list(streams) == list(range(streams[0], streams[0] + len(streams)))
    stream_arg = None if consecutive else to_device(torch.tensor(streams, dtype=torch.int64), device)
    return coeff_arg, scale, stream_arg


def lowrank_direction_args(factors, coeffs, streams, device):
    """(coeff tensor or None, scale, stream tensor or None, K, stream0) of a low-rank launch: direction_args and
    the streams for a regenerated factor (factors None); no directions (K = 0) for explicit factors."""
    if factors is not None:
        return None, 0.0, None, 0, 0
    return (*direction_args(coeffs, streams, device), len(streams), streams[0])


def to_device(table: torch.Tensor, device) -> torch.Tensor:
    """A host table on `device` without waiting for the GPU: a CUDA copy goes through pinned memory, so it is
    queued behind earlier work instead of synchronizing with it (pageable copies wait)."""
    if torch.device(device).type == "cuda":
        table = table.pin_memory()
    return table.to(device, non_blocking=True)


def chunk_spans(numels, offsets, unit, chunk):
    """Yield (tensor index, local0, length) covering every element of every tensor in spans of <= chunk
    elements. Spans start on `unit` boundaries of the global index (offset + local), so the first span of a
    tensor whose offset is not a multiple of `unit` starts at a negative local0 (the kernel masks those)."""
    for t, (n, off) in enumerate(zip(numels, offsets)):
        for local0 in range((off // unit) * unit - off, n, chunk):
            yield t, local0, min(chunk, n - local0)


class TableCache:
    """An LRU of device tables keyed on what they were built from (addresses, sizes, ids, settings). Large
    enough for one table per module of a big model: exact evaluation launches per module, and a rebuilt table
    costs a host-to-device copy that waits for the GPU (measured: a 16-entry cache made exact MeZO steps on
    OPT-1.3B 12x a forward pass)."""

    def __init__(self, size=4096):
        self.size, self.entries = size, collections.OrderedDict()

    def get_or_build(self, key, build):
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = build()
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return entry


def padded_rank(r: int, floor: int) -> int:
    """The smallest power of two >= r and >= floor: the rank a low-rank kernel is compiled for (plain Python: it
    runs per weight on the host path)."""
    return max(1 << (r - 1).bit_length(), floor)


def lowrank_blocks(shapes, bm: int, bn: int, min_programs: int) -> torch.Tensor:
    """int64 [programs, 4] host table of a low-rank launch over weights of `shapes` [(d_out, d_in), ...]: per
    program (weight index t, first row, first column tile, end column tile). A program takes a block of bm rows
    and walks its column tiles of bn; with fewer than min_programs row blocks in all, each row block's tiles are
    split over several programs (as evenly as the count allows), so that small lists still fill the GPU.
    Programs come longest first (most column tiles; stable, so a weight's row blocks stay together): the GPU
    starts blocks in this order, and long programs started last leave most of it idle at the end (OPT-1.3B's
    fc2 rows walk 4x the tiles of the others; list scheduling of its table: 1.15x the ideal in weight order,
    1.03x longest first)."""
    d_out = torch.tensor([s[0] for s in shapes], dtype=torch.int64)
    d_in = torch.tensor([s[1] for s in shapes], dtype=torch.int64)
    row_blocks = -(-d_out // bm)
    col_tiles = -(-d_in // bn)
    split = max(1, min(int(col_tiles.max()), -(-min_programs // int(row_blocks.sum()))))
    per_chunk = -(-col_tiles // split)  # column tiles per program
    chunks = -(-col_tiles // per_chunk)
    programs = row_blocks * chunks
    t = torch.repeat_interleave(torch.arange(len(shapes)), programs)
    local = torch.arange(int(programs.sum())) - torch.repeat_interleave(torch.cumsum(programs, 0) - programs, programs)
    c_begin = (local % chunks[t]) * per_chunk[t]
    c_end = torch.minimum(c_begin + per_chunk[t], col_tiles[t])
    order = torch.sort(c_end - c_begin, descending=True, stable=True).indices
    return torch.stack([t, (local // chunks[t]) * bm, c_begin, c_end], 1)[order]

