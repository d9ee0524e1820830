"""What AGZO and ZO-Act share: choosing the linear layers, and orthonormal bases of their input activations."""
import collections
import functools
import re
import warnings
import weakref
from typing import List, Tuple, Union

import torch

from .. import ops
from .perturbation import check_count

RESCUE_SEED = 0x0F7A  # the seed of orthonormalize's fixed Gaussian matrix
OMEGA_STREAM = 0  # the stream of the range finder's test matrix under the caller's seed
ATTENTION_NAMES = re.compile(r"(^|\.)(q_proj|k_proj|v_proj|out_proj|o_proj|query|key|value|qkv_proj|c_attn)$")


def target_linears(model: torch.nn.Module, targets: Union[str, List[str]] = "all") -> List[Tuple[str, torch.nn.Module]]:
    """(name, module) of the linear layers to train, in model order: targets "all" (every torch.nn.Linear except
    a weight-tied output head), "attention" (q/k/v/out projections by name), or a regex (or list of names) matched
    against module names. Raises ValueError naming the model when nothing matches."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) or _is_linear_like(m)]
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    linears = [(n, m) for n, m in linears if id(getattr(m, "weight", None)) not in embedding_weights]
    if targets == "all":
        chosen = linears
    elif targets == "attention":
        chosen = [(n, m) for n, m in linears if ATTENTION_NAMES.search(n)]
    elif isinstance(targets, str):
        pattern = re.compile(targets)
        chosen = [(n, m) for n, m in linears if pattern.search(n)]
    else:
        names = set(targets)
        chosen = [(n, m) for n, m in linears if n in names]
    if not chosen:
        raise ValueError(f"no linear layer of {type(model).__name__} matches targets={targets!r} "
                         f"({len(linears)} linear layers: {', '.join(n for n, _ in linears[:6])}{', ...' if len(linears) > 6 else ''})")
    return chosen


def check_rank(layers: List[Tuple[str, torch.nn.Module]], rank) -> int:
    """rank as an int >= 1 that fits every layer's d_in (in_features); ValueError naming the layer otherwise."""
    rank = check_count("rank", rank, 1)
    for name, m in layers:
        if rank > m.in_features:
            raise ValueError(f"rank {rank} is larger than d_in = {m.in_features} of layer {name!r}")
    return rank


# SharedProjection's split path (ops.lowrank_project_split) where it can run; False: float32 projections everywhere
# (bench_step's zoact-f32 row compares the two in one process; AGZO has its own switch, agzo.SPLIT_PROJECTION).
SPLIT_PROJECTION = True


class SharedProjection:
    """ops.lowrank_project(x, V) for the layers fed one tensor through one basis (q/k/v projections): computed
    once per input and basis. With split (the default), a bf16/fp16 CUDA x (not recorded by autograd) is read as
    stored, by ops.lowrank_project_split with V split into two 16-bit parts (about 2^-16 relative in bf16) once per
    basis (split_basis_once), where PyTorch has mm with float32 output and SPLIT_PROJECTION is on; else x is read as
    float32 (split=False: callers whose bases live one step, such as AGZO's, where the split's host time is not
    repaid). Keeps weak references only, so it holds no activation
    alive; a new input, a modified one (its version counter) or another basis recomputes. Under autograd (an input
    that requires grad) nothing is cached, so no graph outlives its forward."""

    def __init__(self, split: bool = True):
        self.split = split
        self._last = None  # (weakref to x, x._version, weakref to V, V._version, x V)

    def __call__(self, x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        last = self._last
        if last is not None and last[0]() is x and last[1] == x._version and last[2]() is basis and \
                last[3] == basis._version:
            return last[4]
        if torch.is_grad_enabled() and (x.requires_grad or basis.requires_grad):
            self._last = None
            return ops.lowrank_project(x, basis)
        if self.split and SPLIT_PROJECTION and ops.mm_float32_output(x.device, x.dtype):
            xv = ops.lowrank_project_split(x, split_basis_once(basis, x.dtype))  # no float32 copy of x
        else:
            xv = ops.lowrank_project(x, basis)
        self._last = (weakref.ref(x), x._version, weakref.ref(basis), basis._version, xv)
        return xv


_SPLITS = {}  # id(V) -> (weakref to V, V._version, dtype, ops.split_basis(V, dtype)); an entry leaves with its V


def split_basis_once(basis: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ops.split_basis(V, dtype), computed once per basis, version and dtype and kept while V lives: AGZO (with
    agzo.SPLIT_PROJECTION on) builds a SharedProjection per pass, one for every layer's basis, so a cache per
    projection would split each basis again in every pass."""
    key = id(basis)
    entry = _SPLITS.get(key)
    if entry is None or entry[0]() is not basis or entry[1] != basis._version or entry[2] != dtype:
        ref = weakref.ref(basis, lambda _, key=key: _SPLITS.pop(key, None))
        entry = _SPLITS[key] = (ref, basis._version, dtype, ops.split_basis(basis, dtype))
    return entry[3]


def _is_linear_like(module):
    """Modules the project's quantized linears mark as linear (in_features, out_features, LINEAR_LIKE)."""
    return getattr(module, "LINEAR_LIKE", False)


def activation_basis(x: torch.Tensor, rank: int, *, seed: int, power_iters: int = 1, graphs=None) -> torch.Tensor:
    """V [d_in, rank] float32 with orthonormal columns spanning (approximately) the top-`rank` right singular
    subspace of the activations x [..., d_in]: a randomized range finder (Halko et al. 2011), Y = X^T Omega with
    Omega [tokens, rank] the counter contract's Gaussian stream under `seed` (row-major; the same on every device
    and backend), `power_iters` rounds of Y <- X^T X Y (re-orthonormalized; rank 1: rescaled), V = orth(Y)
    (see orthonormalize). graphs: a BasisGraphs, which replays the same computation as a CUDA graph where x is on
    a CUDA device (the result is the same). Raises ValueError if rank exceeds d_in or the token count."""
    x = x.detach().reshape(-1, x.shape[-1])
    tokens, d_in = x.shape
    if not 1 <= rank <= min(d_in, tokens):
        raise ValueError(f"rank {rank} must be in [1, min(d_in, tokens)] = [1, {min(d_in, tokens)}] "
                         f"(activations of {tokens} tokens x {d_in} features)")
    if graphs is not None and x.is_cuda:
        return graphs.basis(x, rank, seed=seed, power_iters=power_iters)
    return _range_finder(range_input(x), _test_matrix(tokens, rank, seed, x.device), power_iters)


def range_input(x: torch.Tensor) -> torch.Tensor:
    """The activations as the range finder's products read them: bf16 CUDA tensors as stored (cuBLAS sums in
    float32; H200, bench/NOTES.md eighteenth session: 2-37% less time than a float32 copy at the same captured
    energy within 1e-4), everything else as float32 (fp16 products could overflow; CPU bf16 products are slow)."""
    return x if x.is_cuda and x.dtype == torch.bfloat16 else x.float()


def _range_finder(x: torch.Tensor, omega: torch.Tensor, power_iters: int) -> torch.Tensor:
    """activation_basis's computation on x [tokens, d_in] (range_input) and its test matrix omega [tokens, rank]
    float32: the products in x's dtype, the rescaling and orthonormalization in float32 and float64."""
    xt = x.T
    y = (xt @ omega.to(x.dtype)).float()
    for _ in range(power_iters):  # rank 1 needs only a rescaling between rounds (3 ops, not orthonormalize's ~10)
        q = y / torch.linalg.vector_norm(y).clamp_min(1e-30) if omega.shape[1] == 1 else orthonormalize(y)
        y = (xt @ (x @ q.to(x.dtype))).float()
    return orthonormalize(y)


class BasisGraphs:
    """activation_basis on CUDA as one CUDA-graph replay per call instead of about 25 launches, each of which
    costs the host a round of Python and dispatch (AGZO computes a basis per distinct layer input every step).

    Per (tokens, d_in, dtype, rank, power_iters, device) it captures _range_finder, reading a copy of the
    activations (range_input: bf16 as stored, else float32) and the test matrix from buffers it keeps: 2 or 4
    tokens d_in bytes per shape (OPT-1.3B in bf16 at 2048 tokens: 8 MB and 32 MB). A shape is captured the second
    time it is seen (one seen once, such as a last partial batch, runs eagerly and keeps nothing), and at most
    `max_shapes` captures are kept, the least recently used dropped first, so inputs of varying length cost
    bounded memory. The captures of a device share one stream and one memory pool, so cuBLAS's workspace for that
    stream is allocated once (outside the graphs, in the warm-up), not once per graph. A replay copies x into its
    buffer and the test matrix when the seed changed, and returns a copy of the result. Where capture fails, that
    shape falls back to the eager path with one warning. Not thread-safe; replays run on the current stream, one
    after another (with the shared pool, a replay may overwrite another graph's output, so each call copies its
    result out at once)."""

    SEEN_ONCE_KEPT = 64  # shapes remembered as seen once (keys only)

    def __init__(self, max_shapes: int = 8):
        if isinstance(max_shapes, bool) or not isinstance(max_shapes, int) or max_shapes < 1:
            raise ValueError(f"max_shapes must be an int >= 1, got {max_shapes!r}")
        self.max_shapes = max_shapes
        self._entries = collections.OrderedDict()  # key -> capture (dict) or False (capture failed); LRU order
        self._seen_once = collections.OrderedDict()  # key -> None
        self._capture_streams = {}  # device -> (stream, graph memory pool)

    def basis(self, x: torch.Tensor, rank: int, *, seed: int, power_iters: int) -> torch.Tensor:
        """activation_basis(x, rank, seed=seed, power_iters=power_iters) for x [tokens, d_in] on a CUDA device."""
        key = (tuple(x.shape), x.dtype, rank, power_iters, x.device)
        entry = self._entries.get(key)
        if entry is None:
            if key not in self._seen_once:
                self._seen_once[key] = None
                if len(self._seen_once) > self.SEEN_ONCE_KEPT:
                    self._seen_once.popitem(last=False)
                entry = False
            else:
                del self._seen_once[key]
                entry = self._entries[key] = self._capture(x, rank, seed, power_iters)
                if len(self._entries) > self.max_shapes:
                    self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        if entry is False:
            return _range_finder(range_input(x), _test_matrix(x.shape[0], rank, seed, x.device), power_iters)
        if entry["seed"] != seed:
            entry["omega"].copy_(_test_matrix(x.shape[0], rank, seed, x.device))
            entry["seed"] = seed
        entry["x"].copy_(x)
        entry["graph"].replay()
        return entry["out"].clone()

    def _capture(self, x, rank, seed, power_iters):
        tokens, d_in = x.shape
        with torch.cuda.device(x.device):
            if x.device not in self._capture_streams:
                self._capture_streams[x.device] = (torch.cuda.Stream(), torch.cuda.graph_pool_handle())
            side, pool = self._capture_streams[x.device]
            # everything the graph reads stays referenced here (the rescue matrix's cache may drop it)
            buffers = {"x": range_input(x).clone(), "omega": _test_matrix(tokens, rank, seed, x.device).clone(),
                       "seed": seed, "rescue": _rescue_matrix(d_in, rank, x.device)}
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture (library handles, cached constants)
                _range_finder(buffers["x"], buffers["omega"], power_iters)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=pool, stream=side):
                    out = _range_finder(buffers["x"], buffers["omega"], power_iters)
            except RuntimeError as exc:
                warnings.warn(f"zokernels: the activation basis of {tokens} x {d_in} inputs (rank {rank}) could not "
                              f"be captured as a CUDA graph ({exc}); it runs eagerly", RuntimeWarning, stacklevel=4)
                return False
        return dict(buffers, graph=graph, out=out)


def orthonormalize(y: torch.Tensor) -> torch.Tensor:
    """Q [n, r] float32, orthonormal columns spanning those of y [n, r] (r <= n) up to a relative 1e-6, by
    CholeskyQR2 in float64: twice Q <- Q L^-T with L L^T = Q^T Q (r = 1: one normalization). A fixed Gaussian
    matrix of relative size 1e-6 (the counter contract's stream under RESCUE_SEED) is added first, so a
    rank-deficient y (a repeated or zero column) still yields orthonormal columns. Every call is a few small
    queued kernels (cholesky_ex does not check its result on the host); it replaced torch.linalg.qr, whose cost
    per call on the GPU was not measured separately."""
    n, r = y.shape
    q = y.double()
    q = q.addcmul((q.norm() * (1e-6 / (n * r) ** 0.5)).add_(1e-100), _rescue_matrix(n, r, y.device))
    if r == 1:
        return (q / q.norm()).float()  # a fresh [n, 1] tensor: contiguous
    for _ in range(2):
        chol, _ = torch.linalg.cholesky_ex(q.T @ q)
        q = torch.linalg.solve_triangular(chol, q.T, upper=False).T
    return q.float().contiguous()


@functools.lru_cache(maxsize=8)
def _test_matrix(tokens: int, rank: int, seed: int, device: torch.device) -> torch.Tensor:
    """Omega [tokens, rank]: read only; cached, since AGZO uses one per step for every layer it sees."""
    return ops.normal(tokens * rank, seed=seed, stream=OMEGA_STREAM, device=device).view(tokens, rank)


@functools.lru_cache(maxsize=64)
def _rescue_matrix(n: int, r: int, device: torch.device) -> torch.Tensor:
    return ops.normal(n * r, seed=RESCUE_SEED, device=device).view(n, r).double()


def gram_basis(gram: torch.Tensor, rank: int) -> torch.Tensor:
    """V [d_in, rank] float32: the top-`rank` eigenvectors of the activation Gram matrix X^T X (float64), i.e. the
    exact top right singular vectors of X (ZO-Act's one-shot SVD over a calibration set)."""
    d_in = gram.shape[0]
    if not 1 <= rank <= d_in:
        raise ValueError(f"rank {rank} must be in [1, d_in = {d_in}]")
    _, vecs = torch.linalg.eigh(gram.double())
    return vecs[:, -rank:].flip(1).float().contiguous()
