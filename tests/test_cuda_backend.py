"""The CUDA backend: nvcc compiles every kernel (CI, no GPU needed); on a GPU the suite's parity tests run it
through the `backend` fixtures, and these check what is specific to it."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import zokernels as zk
from zokernels import _cuda_build, backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
@pytest.mark.parametrize("source", sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cu"))) +
                         sorted(glob.glob(os.path.join(ROOT, "bench", "exp", "*.cu"))), ids=os.path.basename)
def test_every_kernel_compiles_for_sm90(source, tmp_path):
    """csrc/ and the benchmark harness built on it (bench/exp/), so a change of csrc/ cannot break the harness."""
    cmd = ["nvcc", "-c", source, "-o", str(tmp_path / "k.o"), "-std=c++17", "-O3", f"-I{os.path.join(ROOT, 'csrc')}",
           "-gencode=arch=compute_90,code=sm_90", "-Werror=all-warnings"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def _binding_compile_command(tmp_path):
    """g++ -fsyntax-only of csrc/bindings.cpp against this torch's headers, or None where a header set is missing.
    A CPU build of torch ships c10/cuda's headers without the generated cuda_cmake_macros.h: an empty one stands
    in (it only carries build-time switches)."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    nvcc, gxx = shutil.which("nvcc"), shutil.which("g++")
    python_include = sysconfig.get_paths()["include"]
    if nvcc is None or gxx is None or not os.path.exists(os.path.join(python_include, "Python.h")):
        return None
    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")
    dryrun = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", str(tmp_path / "x.o")],
                            capture_output=True, text=True, timeout=60).stderr  # nvcc names its include dirs
    cuda_includes = re.findall(r'-I"?([^"\s]+)', "".join(l for l in dryrun.splitlines() if "INCLUDES=" in l))
    includes = [str(tmp_path / "shim"), python_include, *include_paths(), *cuda_includes, os.path.join(ROOT, "csrc")]
    return [gxx, "-std=c++17", "-fsyntax-only", *[f"-I{p}" for p in includes], "-DTORCH_EXTENSION_NAME=_C",
            os.path.join(ROOT, "csrc", "bindings.cpp")]


def test_the_bindings_compile_against_this_torch(tmp_path):
    """The torch.library bindings (csrc/bindings.cpp) are C++, not CUDA: checked here too, so that a binding that
    does not compile cannot land either."""
    cmd = _binding_compile_command(tmp_path)
    if cmd is None:
        pytest.skip("no nvcc, g++ or Python headers on this machine")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def test_cuda_backend_refuses_cpu_tensors():
    with pytest.raises(ValueError, match="backend 'cuda' is not available for device cpu: the CUDA backend runs CUDA"):
        zk.perturb_([torch.randn(8)], seed=0, scale=1.0, backend="cuda")


def test_build_targets_sm80_and_sm90():
    flags = " ".join(_cuda_build.NVCC_FLAGS)
    assert "code=sm_80" in flags and "code=sm_90" in flags


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_ops_are_registered_and_graph_capturable():
    if not backends.is_available("cuda", torch.device("cuda")):
        pytest.skip("CUDA extension unavailable here")
    x = torch.randn(10_000, device="cuda", dtype=torch.bfloat16)
    original = x.clone()
    zk.perturb_([x], seed=3, scale=0.1, rounding="stochastic", backend="cuda")  # eager; builds the cached table
    eager = x.clone()
    x.copy_(original)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.zokernels.combine_  # noqa: B018
        zk.perturb_([x], seed=3, scale=0.1, rounding="stochastic", backend="cuda")
    x.copy_(original)
    graph.replay()
    assert torch.equal(x, eager) and not torch.equal(x, original)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_op_runs_under_torch_compile_fullgraph():
    """torch.ops.zokernels.combine_ traces with its Meta impl and mutation schema: compiled == eager, bit for bit.
    The table holds no addresses, so the op writes the tensors it is given (functionalization may pass copies)."""
    if not backends.is_available("cuda", torch.device("cuda")):
        pytest.skip("CUDA extension unavailable here")
    from zokernels.backends import cuda_backend
    from zokernels.backends.launch import key_words

    x = torch.randn(5_000, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(3_000, device="cuda", dtype=torch.bfloat16)
    table = cuda_backend._chunk_table([x, y], [0, 1], [0, 0], "gaussian")
    original_x = x.clone()
    coeffs = torch.tensor([0.5, -0.25], device="cuda")

    def step(a, b, c):
        torch.ops.zokernels.combine_([a, b], [a, b], table, c, 0.0, None, 1, 2, *key_words(7), *key_words(8),
                                     True, True)
        return a.float().sum() + b.float().sum()

    eager_x, eager_y = x.clone(), y.clone()
    eager_total = step(eager_x, eager_y, coeffs)
    assert torch.equal(x, original_x) and not torch.equal(eager_x, original_x)
    compiled = torch.compile(step, fullgraph=True)
    total = compiled(x, y, coeffs)
    assert torch.equal(x.view(torch.int16), eager_x.view(torch.int16))
    assert torch.equal(y.view(torch.int16), eager_y.view(torch.int16))
    torch.testing.assert_close(total, eager_total)


def _binding_call(case):
    """A direct torch.ops.zokernels call that breaks one of the bindings' own checks (ops.py never makes one),
    and the weights it was given."""
    from zokernels.backends import cuda_backend

    if case == "one tensor too many":
        xs = [torch.randn(8, device="cuda") for _ in range(cuda_backend.max_tensors_per_launch() + 1)]
        table = torch.zeros(1, 6, dtype=torch.int64, device="cuda")
        return lambda: torch.ops.zokernels.combine_(xs, xs, table, None, 1.0, None, 0, 1, 0, 0, 0, 0, True, False), xs
    if case == "delta add factor of another rank":
        out = torch.randn(8, 70, device="cuda").bfloat16()
        xv, f = torch.randn(8, 3, device="cuda"), torch.randn(70, 2, device="cuda")
        return lambda: torch.ops.zokernels.lowrank_delta_add_(out, xv, f, 1.0), [out]
    dtype, r = {"fp32 weights": (torch.float32, 16), "rank 65": (torch.bfloat16, 65),
                "rank 129": (torch.bfloat16, 129)}[case]
    w = torch.randn(8, 70, device="cuda").to(dtype)
    v = torch.randn(70, r, device="cuda")
    table = cuda_backend._lowrank_table([w], [min(r, 64)], [0], "tensor_core", 64, "nearest")
    return lambda: torch.ops.zokernels.lowrank_combine_([w], [v], [], table, None, 1.0, None, 0, 1, 0, 0, 0, 0, False,
                                                         True), [w]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case, error", [
    ("fp32 weights", r"tensor-core low-rank kernel takes 16-bit weights and ranks <= 64 \(got Float, rank 16\)"),
    ("rank 65", r"tensor-core low-rank kernel takes 16-bit weights and ranks <= 64 \(got BFloat16, rank 65\)"),
    ("rank 129", r"bases\[0\] must be a contiguous CUDA float32 \[d_in, r\] tensor, 1 <= r <= 128"),
    ("one tensor too many", None),
    ("delta add factor of another rank", r"f must be a contiguous float32 \[d_out, r\] tensor on out's device")])
def test_the_bindings_own_checks_raise_with_their_numbers_and_write_nothing(case, error):
    """The bindings' messages carry numbers (bindings.cpp builds them without std::ostream: on the H100 image a
    failing c10::str check with an int crashed the process instead of raising)."""
    if not backends.is_available("cuda", torch.device("cuda")):
        pytest.skip("CUDA extension unavailable here")
    from zokernels.backends import cuda_backend

    call, tensors = _binding_call(case)
    if error is None:
        limit = cuda_backend.max_tensors_per_launch()
        error = f"at most {limit} tensors per launch, got {limit + 1}"
    before = [t.clone() for t in tensors]
    with pytest.raises(RuntimeError, match=error):
        call()
    assert all(torch.equal(t, b) for t, b in zip(tensors, before))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_more_tensors_than_one_launch_holds_match_reference():
    if not backends.is_available("cuda", torch.device("cuda")):
        pytest.skip("CUDA extension unavailable here")
    from zokernels.backends import cuda_backend

    gen = torch.Generator().manual_seed(5)
    count = 2 * cuda_backend.max_tensors_per_launch() + 7
    host = [torch.randn(int(n), generator=gen) for n in torch.randint(1, 300, (count,), generator=gen)]
    fast = [t.cuda() for t in host]
    zk.combine_(fast, seed=11, coeffs=[0.5, -1.5], streams=[4, 9], backend="cuda")
    zk.combine_(host, seed=11, coeffs=[0.5, -1.5], streams=[4, 9], backend="reference")
    for a, b in zip(fast, host):
        torch.testing.assert_close(a.cpu(), b, atol=2e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_lists_split_over_several_launches_equal_one_launch(monkeypatch):
    """Lists longer than one launch holds (max_tensors_per_launch) go out in several launches, bit-identical to one
    launch: combine_ and lowrank_combine_, stochastic rounding."""
    if not backends.is_available("cuda", torch.device("cuda")):
        pytest.skip("CUDA extension unavailable here")
    from zokernels.backends import cuda_backend

    gen = torch.Generator().manual_seed(6)
    params = [torch.randn(n, generator=gen).to(torch.bfloat16).cuda() for n in (300, 17, 4096, 1, 999)]
    weights = [(torch.randn(s, generator=gen) * 0.5).to(torch.bfloat16).cuda()
               for s in [(40, 24), (8, 24), (70, 32), (16, 16), (33, 24)]]
    bases = [torch.linalg.qr(torch.randn(w.shape[1], 8, generator=gen))[0].contiguous().cuda() for w in weights]

    def updated():
        p, w = [x.clone() for x in params], [x.clone() for x in weights]
        zk.combine_(p, seed=3, coeffs=[0.5, -1.0], rounding="stochastic", backend="cuda")
        zk.lowrank_combine_(w, bases, seed=3, coeffs=[0.5, -1.0], rounding="stochastic", backend="cuda")
        return p + w

    one_launch = updated()
    assert cuda_backend.max_tensors_per_launch() >= 5
    monkeypatch.setitem(cuda_backend._state, "max_tensors", 2)
    split = updated()
    assert not torch.equal(one_launch[0], params[0]) and not torch.equal(one_launch[-1], weights[-1])
    assert all(torch.equal(a, b) for a, b in zip(one_launch, split))


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_cuda_chunk_rows_start_on_kernel_groups(dist):
    """Each CUDA thread owns a group of 8 (Gaussian) or 32 (Rademacher) elements aligned on the global index: a
    span that started mid-group would let two blocks write the same elements."""
    from zokernels.backends import cuda_backend

    tensors = [torch.empty(n) for n in (5, 70_001, 3, 200_000)]
    offsets = [3, 8, 70_017, 70_020]
    rows = cuda_backend._chunk_table(tensors, [0, 1, 2, 3], offsets, dist).tolist()
    group = cuda_backend.GROUP[dist]
    covered = [0] * len(tensors)
    for t, local0, numel, offset, tid, length in rows:
        assert (offset + local0) % group == 0 and length <= cuda_backend.CHUNK
        covered[t] += min(local0 + length, numel) - max(local0, 0)
    assert covered == [t.numel() for t in tensors]


@pytest.fixture
def fake_cuda_machine(monkeypatch):
    """A machine that looks like it has a CUDA GPU of a chosen capability (no GPU needed)."""
    from zokernels.backends import cuda_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(cuda_backend, "_state", {"loaded": False, "error": None, "source": None})
    return cuda_backend


def test_old_gpu_gets_a_clear_message(fake_cuda_machine, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    reason = fake_cuda_machine.unavailable_reason(torch.device("cuda"))
    assert "compute capability 7.5" in reason and "sm_80/sm_90" in reason and "rebuild" in reason


def test_a_ready_device_is_remembered_and_a_refused_one_is_asked_again(fake_cuda_machine, monkeypatch):
    """unavailable_reason queries the runtime once per ready device (the ops resolve a backend on every call);
    a device it refused is checked afresh each time."""
    queries = []

    def capability(device=None):
        queries.append(device)
        return (9, 0) if len(queries) > 1 else (7, 5)

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(fake_cuda_machine, "_load", lambda: None)
    device = torch.device("cuda", 0)
    assert "compute capability 7.5" in fake_cuda_machine.unavailable_reason(device)
    assert [fake_cuda_machine.unavailable_reason(device) for _ in range(3)] == [None] * 3
    assert len(queries) == 2


def test_failed_build_warns_once_and_falls_back(fake_cuda_machine, monkeypatch):
    import torch.utils.cpp_extension

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))

    def failing_load(**kwargs):
        raise RuntimeError("ninja is required to load C++ extensions")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_load)
    monkeypatch.setitem(sys.modules, "zokernels._C", None)  # no prebuilt extension either (a GPU machine has one)
    monkeypatch.delattr(zk, "_C", raising=False)
    with pytest.warns(RuntimeWarning, match="backend 'cuda' is unavailable and 'auto' uses Triton"):
        reason = fake_cuda_machine.unavailable_reason(torch.device("cuda"))
    assert "ninja is required" in reason
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second question answers from the cached failure, silently
        assert "ninja is required" in fake_cuda_machine.unavailable_reason(torch.device("cuda"))


def test_reasons_distinguish_a_cpu_build_from_a_missing_device(monkeypatch):
    from zokernels.backends import cuda_backend

    monkeypatch.setitem(cuda_backend._state, "ready_devices", set())  # on a GPU machine: forget the real device
    monkeypatch.setattr(torch.version, "cuda", None)
    assert cuda_backend.unavailable_reason(torch.device("cuda")) == "this torch build has no CUDA"
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_backend.unavailable_reason(torch.device("cuda")) == "torch sees no CUDA device"
