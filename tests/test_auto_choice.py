"""How "auto" picks a backend: measured per device and op class, else a fixed order; never an unavailable one."""
import importlib.util
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


def test_bench_chooses_the_fastest_backend_measured_in_one_run():
    spec = importlib.util.spec_from_file_location("bench_perturb", os.path.join(ROOT, "bench", "bench_perturb.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [dict(op="perturb_", dist="gaussian", rounding="nearest", K=1, backend="cuda", ms=1.8),
            dict(op="perturb_", dist="gaussian", rounding="nearest", K=1, backend="triton", ms=1.9),
            dict(op="combine_", dist="gaussian", rounding="stochastic", K=16, backend="cuda", ms=25.0),
            dict(op="combine_", dist="gaussian", rounding="stochastic", K=16, backend="triton", ms=21.0),
            dict(op="combine_", dist="rademacher", rounding="stochastic", K=4, backend="triton", ms=4.0),
            dict(op="eager", dist="gaussian", rounding="nearest", K=1, backend="eager", ms=0.1)]
    assert bench.auto_choices(rows) == {"gaussian/nearest/K=1": "cuda", "gaussian/stochastic/K=5-16": "triton"}
