"""How "auto" picks a backend: measured per device and op class, else a fixed order; never an unavailable one."""
import importlib.util
import json
import os

import pytest
import torch

from zokernels import backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fake_gpu(monkeypatch):
    available = {"cuda", "triton", "reference"}
    monkeypatch.setattr(backends, "_device_name", lambda device: "FakeGPU")
    monkeypatch.setattr(backends, "is_available", lambda name, device: name in available)
    monkeypatch.setattr(backends, "_auto_choices", lambda: {"FakeGPU": {
        "gaussian/nearest/K=1": "cuda", "rademacher/stochastic/K=5-16": "triton"}})
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)
    return available


def test_op_class_buckets():
    assert backends.op_class("gaussian", "nearest", 1) == "gaussian/nearest/K=1"
    assert backends.op_class("rademacher", "stochastic", 4) == "rademacher/stochastic/K=2-4"
    assert backends.op_class("gaussian", "stochastic", 16) == "gaussian/stochastic/K=5-16"
    assert backends.op_class("gaussian", "stochastic", 64) == "gaussian/stochastic/K=17+"


def test_lowrank_class_buckets_the_largest_rank_as_the_kernels_do():
    assert backends.lowrank_class("nearest", 1, 1) == "lowrank/nearest/K=1/r<=8"
    assert backends.lowrank_class("stochastic", 4, 16) == "lowrank/stochastic/K=2-4/r<=16"
    assert backends.lowrank_class("stochastic", 1, 17) == "lowrank/stochastic/K=1/r<=32"
    assert backends.lowrank_class("nearest", 20, 100) == "lowrank/nearest/K=17+/r<=128"


def test_the_low_rank_op_asks_auto_for_its_class(monkeypatch):
    """lowrank_combine_ resolves "auto" with the class of its rounding, K and largest rank."""
    import zokernels as zk

    asked = []
    monkeypatch.setattr(backends, "resolve", lambda name, device, op=None: asked.append(op) or "reference")
    weights = [torch.randn(6, 10), torch.randn(4, 10)]
    bases = [torch.randn(10, 3), torch.randn(10, 12)]
    zk.lowrank_combine_(weights, bases, seed=0, coeffs=[1.0, 2.0], rounding="stochastic")
    assert asked == ["lowrank/stochastic/K=2-4/r<=16"]


def test_auto_uses_the_measured_choice(fake_gpu):
    cuda = torch.device("cuda")
    assert backends.resolve("auto", cuda, "gaussian/nearest/K=1") == "cuda"
    assert backends.resolve("auto", cuda, "rademacher/stochastic/K=5-16") == "triton"
    assert backends.resolve("auto", cuda, "gaussian/stochastic/K=17+") == "triton"  # not measured: the order
    fake_gpu.discard("cuda")
    assert backends.resolve("auto", cuda, "gaussian/nearest/K=1") == "triton"  # measured one unavailable


def test_without_triton_the_order_takes_cuda_before_the_reference(fake_gpu):
    fake_gpu.discard("triton")
    assert backends.resolve("auto", torch.device("cuda"), "lowrank/nearest/K=1") == "cuda"
    fake_gpu.discard("cuda")
    assert backends.resolve("auto", torch.device("cuda"), "lowrank/nearest/K=1") == "reference"


def test_env_and_cpu_override_measurements(fake_gpu, monkeypatch):
    assert backends.resolve("auto", torch.device("cpu"), "gaussian/nearest/K=1") == "reference"
    monkeypatch.setenv(backends.BACKEND_ENV, "reference")
    assert backends.resolve("auto", torch.device("cuda"), "gaussian/nearest/K=1") == "reference"


def _bench_perturb():
    spec = importlib.util.spec_from_file_location("bench_perturb", os.path.join(ROOT, "bench", "bench_perturb.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_saving_one_op_familys_choices_keeps_the_others(tmp_path):
    """bench_perturb --save-auto and bench_lowrank --save-auto each replace their own family of one device's
    choices: neither erases the other's, and each family says which run it comes from."""
    bench, path = _bench_perturb(), tmp_path / "auto.json"
    run = dict(device="FakeGPU", date="2026-01-01", torch="t1", triton="x1")
    bench.save_auto_choices(run, {"gaussian/nearest/K=1": "cuda", "rademacher/nearest/K=1": "triton"}, path)
    low = dict(run, date="2026-01-02")
    bench.save_auto_choices(low, {"lowrank/stochastic/K=1/r<=8": "cuda"}, path)
    again = bench.save_auto_choices(dict(run, date="2026-01-03"), {"gaussian/nearest/K=1": "triton"}, path)
    assert again == {"gaussian/nearest/K=1": "triton", "lowrank/stochastic/K=1/r<=8": "cuda"}
    runs = json.loads(path.read_text())["FakeGPU"]["runs"]
    assert runs["elementwise"]["date"] == "2026-01-03" and runs["lowrank"]["date"] == "2026-01-02"


def test_the_committed_choices_file_has_every_families_runs():
    """The package's auto_choices.json as the readers expect it: choices and the run of each family they come
    from (elementwise, lowrank, delta_add)."""
    family = _bench_perturb()._op_family
    with open(backends.AUTO_CHOICES_FILE) as f:
        table = json.load(f)
    for entry in table.values():
        assert set(entry["runs"]) == {family(k) for k in entry["choices"]}
    assert [family(k) for k in ("gaussian/nearest/K=1", "lowrank/nearest/K=1/r<=8", "delta_add/r=1")] == \
        ["elementwise", "lowrank", "delta_add"]


def test_delta_add_rank_classes():
    assert [backends.delta_add_class(r) for r in (1, 2, 8, 9, 16, 17, 32, 33, 128)] == [
        "delta_add/r=1", "delta_add/r<=8", "delta_add/r<=8", "delta_add/r<=16", "delta_add/r<=16",
        "delta_add/r<=32", "delta_add/r<=32", "delta_add/r>32", "delta_add/r>32"]


def test_bench_chooses_the_fastest_backend_measured_in_one_run():
    bench = _bench_perturb()
    rows = [dict(op="perturb_", dist="gaussian", rounding="nearest", K=1, backend="cuda", ms=1.8),
            dict(op="perturb_", dist="gaussian", rounding="nearest", K=1, backend="triton", ms=1.9),
            dict(op="combine_", dist="gaussian", rounding="stochastic", K=16, backend="cuda", ms=25.0),
            dict(op="combine_", dist="gaussian", rounding="stochastic", K=16, backend="triton", ms=21.0),
            dict(op="combine_", dist="rademacher", rounding="stochastic", K=4, backend="triton", ms=4.0),
            dict(op="eager", dist="gaussian", rounding="nearest", K=1, backend="eager", ms=0.1)]
    assert bench.auto_choices(rows) == {"gaussian/nearest/K=1": "cuda", "gaussian/stochastic/K=5-16": "triton"}


def test_bench_ranks_by_device_time_and_breaks_device_ties_by_host_time():
    bench = _bench_perturb()

    def row(r, backend, ms, host_ms, device_ms):
        return dict(rounding="nearest", K=1, r=r, backend=backend, ms=ms, host_ms=host_ms, device_ms=device_ms)

    rows = [row(64, "cuda", 2.00, 2.00, 1.90), row(64, "triton", 1.95, 1.95, 2.10),  # host-bound timed figures
            row(16, "cuda", 1.74, 1.71, 1.738), row(16, "triton", 1.96, 1.91, 1.735),  # kernels tied (0.2% apart)
            row(8, "cuda", 1.80, 1.50, 1.80), row(8, "triton", 1.80, 1.70, 1.70)]  # 5.9% apart: no tie
    choices = bench.auto_choices(rows, lambda x: backends.lowrank_class(x["rounding"], x["K"], x["r"]))
    by_rank = {r: choices[backends.lowrank_class("nearest", 1, r)] for r in (8, 16, 64)}
    assert by_rank == {64: "cuda", 16: "cuda", 8: "triton"} and len(choices) == 3
