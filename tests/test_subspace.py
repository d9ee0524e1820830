"""Layer targeting and activation bases (zokernels/zo/subspace.py)."""
import pytest
import torch

from zokernels import ops
from zokernels.zo import subspace
from zokernels.zo.subspace import BasisGraphs, activation_basis, gram_basis, orthonormalize, target_linears

from .zo_problems import force_split_projection, tiny_opt


def _low_rank_activations(tokens=96, d_in=40, rank=6, noise=1e-3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, rank, generator=gen) @ torch.randn(rank, d_in, generator=gen) + \
        noise * torch.randn(tokens, d_in, generator=gen)


@pytest.mark.parametrize("power_iters", [0, 1, 2])
def test_range_finder_basis_is_orthonormal_and_spans_the_activations(power_iters):
    x = _low_rank_activations().reshape(4, 24, 40)  # [batch, seq, d_in] like a layer input
    v = activation_basis(x, 6, seed=1, power_iters=power_iters)
    assert v.shape == (40, 6) and v.dtype == torch.float32
    torch.testing.assert_close(v.T @ v, torch.eye(6), atol=1e-5, rtol=0)
    flat = x.reshape(-1, 40)
    residual = (flat - flat @ v @ v.T).norm() / flat.norm()
    assert residual < 1e-2, residual


def test_gram_basis_is_the_top_right_singular_subspace():
    x = _low_rank_activations(noise=0.3)
    v = gram_basis(x.double().T @ x.double(), 6)
    top = torch.linalg.svd(x.double(), full_matrices=False).Vh[:6].T
    torch.testing.assert_close((v.double() @ v.double().T), top @ top.T, atol=1e-6, rtol=0)


@pytest.mark.parametrize("rank, error", [(41, "rank 41 must be in \\[1, min\\(d_in, tokens\\)\\] = \\[1, 40\\]"),
                                         (0, "rank 0 must be in")])
def test_range_finder_refuses_a_rank_above_d_in(rank, error):
    with pytest.raises(ValueError, match=error):
        activation_basis(_low_rank_activations(), rank, seed=0)


def test_range_finder_refuses_a_rank_above_the_token_count():
    with pytest.raises(ValueError, match="rank 9 must be in \\[1, min\\(d_in, tokens\\)\\] = \\[1, 8\\] \\(activations of 8 tokens"):
        activation_basis(torch.randn(2, 4, 40), 9, seed=0)


def test_targets_all_attention_and_patterns():
    model, _ = tiny_opt(torch.float32)
    every = [n for n, _ in target_linears(model, "all")]
    assert "lm_head" not in every  # tied to the input embedding
    assert len(every) == 2 * 6 and every[0] == "model.decoder.layers.0.self_attn.k_proj"
    attention = [n for n, _ in target_linears(model, "attention")]
    assert len(attention) == 2 * 4 and all(n.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "out_proj") for n in attention)
    assert [n for n, _ in target_linears(model, r"layers\.1\.fc")] == ["model.decoder.layers.1.fc1", "model.decoder.layers.1.fc2"]
    assert [n for n, _ in target_linears(model, ["model.decoder.layers.0.fc2"])] == ["model.decoder.layers.0.fc2"]


def test_a_model_with_no_targeted_layer_is_refused():
    with pytest.raises(ValueError, match="no linear layer of Sequential matches targets='attention' \\(2 linear layers"):
        target_linears(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)), "attention")
    with pytest.raises(ValueError, match="no linear layer of ReLU matches"):
        target_linears(torch.nn.ReLU(), "all")


@pytest.mark.parametrize("case", ["cond 1e9", "repeated column", "zero column", "all zero"])
def test_orthonormalize_returns_orthonormal_columns_spanning_the_input(case):
    """CholeskyQR2 with its fixed rescue term: orthonormal to 1e-6 and the input's span kept to a relative 1e-5,
    on an ill-conditioned and on rank-deficient inputs (where plain CholeskyQR breaks down)."""
    gen = torch.Generator().manual_seed(5)
    u = torch.linalg.qr(torch.randn(300, 6, generator=gen, dtype=torch.float64))[0]
    w = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))[0]
    y = u * torch.logspace(0, -9 if case == "cond 1e9" else -1, 6, dtype=torch.float64) @ w
    if case == "repeated column":
        y[:, 3] = y[:, 1]
    elif case == "zero column":
        y[:, 5] = 0
    elif case == "all zero":
        y.zero_()
    q = orthonormalize(y.float())
    assert q.shape == (300, 6) and q.dtype == torch.float32
    torch.testing.assert_close(q.T @ q, torch.eye(6), atol=1e-6, rtol=0)
    residual = (y - q.double() @ (q.double().T @ y)).norm()
    assert residual <= 1e-5 * y.norm()


@pytest.mark.parametrize("scale", [1.0, 0.0], ids=["vector", "zero vector"])
def test_orthonormalize_rank_one_is_a_normalization(scale):
    y = scale * torch.randn(50, 1, generator=torch.Generator().manual_seed(2))
    q = orthonormalize(y)
    assert abs(q.norm().item() - 1) <= 1e-6
    if scale:
        torch.testing.assert_close(q, y / y.norm(), atol=2e-6, rtol=0)


@pytest.mark.parametrize("power_iters", [1, 3])
def test_rank_one_range_finder_finds_the_top_singular_vector(power_iters):
    """AGZO's default (rank 1, rescaled power rounds): the basis aligns with the top right singular vector."""
    gen = torch.Generator().manual_seed(6)
    x = (torch.randn(96, 3, generator=gen) * torch.tensor([10.0, 3.0, 1.0])) @ torch.randn(3, 40, generator=gen)
    v = activation_basis(x, 1, seed=4, power_iters=power_iters)
    top = torch.linalg.svd(x.double(), full_matrices=False).Vh[0]
    assert v.shape == (40, 1) and abs(v.norm().item() - 1) <= 1e-6
    assert abs(float(top @ v.double()[:, 0])) >= 0.99


def test_the_range_finder_is_a_function_of_its_seed():
    """Omega comes from the counter contract: the same seed gives the same basis, another seed another one."""
    x = _low_rank_activations(noise=0.3)
    a, b = activation_basis(x, 3, seed=7), activation_basis(x, 3, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, activation_basis(x, 3, seed=8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_range_finder_gives_the_same_basis_on_the_gpu_as_on_the_cpu():
    """The test matrix is the contract's stream on both devices (GPU normals within 1e-5 of the reference): the
    subspaces agree (projectors compared, float32 products on either side)."""
    x = _low_rank_activations(noise=0.3)
    cpu = activation_basis(x, 3, seed=7, power_iters=2).double()
    gpu = activation_basis(x.cuda(), 3, seed=7, power_iters=2).cpu().double()
    torch.testing.assert_close(gpu @ gpu.T, cpu @ cpu.T, atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("rank, power_iters", [(1, 0), (1, 3), (3, 2)])
def test_graph_replays_give_the_eager_basis_for_new_inputs_and_seeds(rank, power_iters):
    """BasisGraphs against the eager range finder on the GPU: a shape's first call (eager), its second (capture),
    a new input at the same shape (the input buffer refilled), a new seed (the test matrix refilled), a second
    shape twice; every result a tensor of its own (a later replay does not change an earlier result). float32
    bases, entries <= 1: equal to 1e-6 (the same kernels run in both)."""
    graphs = BasisGraphs()
    gen = torch.Generator().manual_seed(rank + power_iters)
    calls = [(torch.randn(2, 24, 40, generator=gen), 5), (torch.randn(2, 24, 40, generator=gen), 5),
             (torch.randn(2, 24, 40, generator=gen), 5), (torch.randn(2, 24, 40, generator=gen), 6),
             (torch.randn(30, 56, generator=gen), 6), (torch.randn(30, 56, generator=gen), 6)]
    results = []
    for x, seed in calls:
        x = x.cuda().to(torch.bfloat16)
        got = activation_basis(x, rank, seed=seed, power_iters=power_iters, graphs=graphs)
        want = activation_basis(x, rank, seed=seed, power_iters=power_iters)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        results.append((got, got.clone()))
    assert len(graphs._entries) == 2 and all(e is not False for e in graphs._entries.values())
    assert all(torch.equal(a, b) for a, b in results)
    assert not torch.equal(results[1][0], results[2][0]) and not torch.equal(results[2][0], results[3][0])


def test_graph_cache_captures_a_shape_on_its_second_sight_and_keeps_the_most_recently_used(monkeypatch):
    """BasisGraphs' bookkeeping, on the CPU with a stand-in capture (its replay runs the eager range finder on the
    buffers it keeps): a shape seen once runs eagerly and captures nothing; its second sight captures; with
    max_shapes = 2 a third capture drops the least recently used one, which is then seen afresh. Every result
    equals the eager basis (new inputs and seeds at each call)."""
    captured = []

    def capture(self, x, rank, seed, power_iters):
        captured.append(x.shape[0])
        kept = {"x": x.float(), "omega": subspace._test_matrix(x.shape[0], rank, seed, x.device).clone(), "seed": seed}
        out = torch.empty(x.shape[1], rank)

        class Replay:
            def replay(self):
                out.copy_(subspace._range_finder(kept["x"], kept["omega"], power_iters))
        return dict(kept, graph=Replay(), out=out)

    monkeypatch.setattr(BasisGraphs, "_capture", capture)
    graphs = BasisGraphs(max_shapes=2)
    gen = torch.Generator().manual_seed(0)
    for call, tokens in enumerate([10, 10, 11, 11, 10, 12, 12, 11, 11, 12]):
        x = torch.randn(tokens, 16, generator=gen)
        got = graphs.basis(x, 2, seed=call, power_iters=1)
        assert torch.equal(got, activation_basis(x, 2, seed=call, power_iters=1))
    assert captured == [10, 11, 12, 11]
    assert [key[0][0] for key in graphs._entries] == [11, 12]  # 12 used last
    with pytest.raises(ValueError, match="max_shapes must be an int >= 1, got 0"):
        BasisGraphs(max_shapes=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_a_split_basis_holds_the_float32_basis_to_twice_the_dtypes_bits(dtype):
    """split_basis(V, dtype) = [V_hi | V_lo] with V_hi + V_lo within 2^-16 (bf16) / 2^-20 (fp16) of V relative to
    max |V| (fresh orthonormal V; V_hi alone is only within 2^-9 / 2^-12), and V_hi is V rounded to dtype."""
    v = torch.linalg.qr(torch.randn(300, 7, generator=torch.Generator().manual_seed(4)))[0]
    split = ops.split_basis(v, dtype)
    assert split.shape == (300, 14) and split.dtype == dtype
    hi, lo = split[:, :7].float(), split[:, 7:].float()
    assert torch.equal(hi, v.to(dtype).float())
    bound = {torch.bfloat16: 2.0 ** -16, torch.float16: 2.0 ** -20}[dtype] * v.abs().max()
    assert (hi + lo - v).abs().max() <= bound < (hi - v).abs().max()


def test_a_basis_is_split_once_per_version_across_projections_and_its_split_leaves_with_it(monkeypatch):
    """AGZO builds a SharedProjection per pass and passes it every layer's basis: each basis is split once (not
    once per pass or per switch between bases), again after an in-place change, and its split is dropped when the
    basis is. The split path is forced on the CPU with a float32 stand-in for the 16-bit GEMM."""
    calls = force_split_projection(monkeypatch)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(5, 64, generator=gen).bfloat16()
    v1, v2 = (torch.linalg.qr(torch.randn(64, 2, generator=gen))[0] for _ in range(2))
    for _ in range(2):  # two passes, each with its own projection, alternating bases
        projection = subspace.SharedProjection()
        for v in (v1, v2, v1):
            got = projection(x.clone(), v)
            torch.testing.assert_close(got, x.float() @ v, rtol=0, atol=2.0 ** -14)
    assert len(calls) == 2 and calls[0] is v1 and calls[1] is v2
    v1.mul_(-1.0)
    torch.testing.assert_close(subspace.SharedProjection()(x, v1), x.float() @ v1, rtol=0, atol=2.0 ** -14)
    assert len(calls) == 3
    held = len(subspace._SPLITS)
    del v2, calls[1]
    assert len(subspace._SPLITS) == held - 1
    monkeypatch.setattr(subspace, "SPLIT_PROJECTION", False)  # the switch: float32 projections, nothing split
    assert torch.equal(subspace.SharedProjection()(x, v1 * 2.0), ops.lowrank_project(x, v1 * 2.0)) and len(calls) == 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_shared_projection_reads_16_bit_cuda_inputs_through_the_split_basis_and_cpu_ones_in_float32(dtype):
    """On the CPU (no mm with float32 output) the projection is ops.lowrank_project's, bit for bit. On a GPU whose
    PyTorch has it for the dtype, a bf16 / fp16 x is read as stored: within 2^-15 of the float64 x V relative to
    sum |x| |V| per entry, and computed once for the same x and basis."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 50, 256, generator=gen).to(dtype)
    v = torch.linalg.qr(torch.randn(256, 4, generator=gen))[0]
    projection = subspace.SharedProjection()
    assert torch.equal(projection(x, v), ops.lowrank_project(x, v))
    assert not ops.mm_float32_output(torch.device("cpu"), dtype)
    if not torch.cuda.is_available():
        return
    x, v = x.cuda(), v.cuda()
    assert not ops.mm_float32_output(x.device, torch.float32)  # float32 inputs keep lowrank_project's path
    if not ops.mm_float32_output(x.device, dtype):
        pytest.skip(f"this PyTorch has no mm with float32 output for {dtype} CUDA operands")
    projection = subspace.SharedProjection()
    got = projection(x, v)
    assert got.dtype == torch.float32 and projection(x, v) is got
    scale = x.double().abs() @ v.double().abs()
    assert ((got.double() - x.double() @ v.double()).abs() <= 2.0 ** -15 * scale).all()
    assert not torch.equal(got, torch.zeros_like(got))
