"""Backend registry. Every backend module has NAME, unavailable_reason(device),
combine(...), stream_values(...), philox4x32_10(...), implementing the same contract (zokernels.contract)."""
import functools
import importlib
import json
import os

import torch

from .launch import padded_rank

BACKEND_ENV = "ZOKERNELS_BACKEND"
_MODULES = {"reference": ".reference", "triton": ".triton_backend", "cuda": ".cuda_backend"}
# without a measurement for the device and op: fastest first; CUDA before the reference where Triton is missing
_AUTO_ORDER = ("triton", "cuda", "reference")
AUTO_CHOICES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "auto_choices.json")
_loaded = {}
_import_errors = {}


def _k_bucket(k: int) -> str:
    return "1" if k <= 1 else "2-4" if k <= 4 else "5-16" if k <= 16 else "17+"


def op_class(dist: str, rounding: str, k: int) -> str:
    """The key under which "auto" choices of the elementwise ops are measured: distribution, rounding, K bucket."""
    return f"{dist}/{rounding}/K={_k_bucket(k)}"


def lowrank_class(rounding: str, k: int, max_rank: int) -> str:
    """The key of the low-rank op's "auto" choices: rounding, K bucket and the launch's largest rank padded to a
    power of two (at least 8), the buckets of the kernels' rank templates."""
    return f"lowrank/{rounding}/K={_k_bucket(k)}/r<={padded_rank(max_rank, 8)}"


def delta_add_class(rank: int) -> str:
    """The key of lowrank_delta_add_'s "auto" choices: the rank bucket (1, <= 8, <= 16, <= 32, > 32)."""
    return "delta_add/r=1" if rank <= 1 else next((f"delta_add/r<={b}" for b in (8, 16, 32) if rank <= b),
                                                  "delta_add/r>32")


@functools.lru_cache(maxsize=None)
def _auto_choices():
    """{device name: {op class: backend}}, written by `python -m zokernels bench --save-auto` (elementwise ops),
    `bench/bench_lowrank.py --backend triton,cuda --save-auto` (low-rank op) and `bench/bench_delta_add.py
    --save-auto` (lowrank_delta_add_), each from one run."""
    try:
        with open(AUTO_CHOICES_FILE) as f:
            return {dev: entry["choices"] for dev, entry in json.load(f).items()}
    except FileNotFoundError:
        return {}


@functools.lru_cache(maxsize=None)
def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def names():
    return tuple(_MODULES)


def load(name: str):
    """The backend module, or None if it cannot be imported here (the reason is kept for error messages)."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name], __name__)
        except ImportError as exc:  # e.g. no triton installed
            _loaded[name], _import_errors[name] = None, exc
    return _loaded[name]


def is_available(name: str, device: torch.device) -> bool:
    module = load(name)
    return module is not None and module.unavailable_reason(device) is None


def resolve(backend: str, device: torch.device, op: str = None) -> str:
    """Name of the backend that runs for `backend` ("auto" or a name) on `device`; ValueError if it cannot.
    "auto": ZOKERNELS_BACKEND if set; else the backend measured fastest for this device and `op` (an op_class)
    if it is available; else the first available of _AUTO_ORDER."""
    device = torch.device(device)
    if backend == "auto":
        forced = os.environ.get(BACKEND_ENV, "").strip()
        if forced and forced != "auto":
            backend = forced
        else:
            if device.type == "cpu":  # on the CPU Triton is only its (slow) interpreter
                return "reference"
            measured = _auto_choices().get(_device_name(device), {}).get(op) if op else None
            if measured is not None and is_available(measured, device):
                return measured
            return next(n for n in _AUTO_ORDER if is_available(n, device))
    if backend not in _MODULES:
        raise ValueError(f"unknown backend {backend!r}; choose one of 'auto', {', '.join(map(repr, _MODULES))}")
    module = load(backend)
    why = f"import failed: {_import_errors[backend]}" if module is None else module.unavailable_reason(device)
    if why is not None:
        raise ValueError(f"backend {backend!r} is not available for device {device}: {why}")
    return backend
