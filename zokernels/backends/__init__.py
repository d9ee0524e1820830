"""Backend registry. Every backend module has NAME, unavailable_reason(device),
combine(...), stream_values(...), philox4x32_10(...), implementing the same contract (zokernels.contract)."""
import importlib
import os

import torch

BACKEND_ENV = "ZOKERNELS_BACKEND"
_MODULES = {"reference": ".reference", "triton": ".triton_backend", "cuda": ".cuda_backend"}
_AUTO_ORDER = ("triton", "reference")  # fastest first; "cuda" joins once measured faster (bench/NOTES.md)
_loaded = {}
_import_errors = {}


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


def resolve(backend: str, device: torch.device) -> str:
    """Name of the backend that runs for `backend` ("auto" or a name) on `device`; ValueError if it cannot."""
    device = torch.device(device)
    if backend == "auto":
        forced = os.environ.get(BACKEND_ENV, "").strip()
        if forced and forced != "auto":
            backend = forced
        else:
            # On the CPU Triton is only its (slow) interpreter: "auto" takes the reference there.
            return next(n for n in _AUTO_ORDER if is_available(n, device) and (n == "reference" or device.type != "cpu"))
    if backend not in _MODULES:
        raise ValueError(f"unknown backend {backend!r}; choose one of 'auto', {', '.join(map(repr, _MODULES))}")
    module = load(backend)
    why = f"import failed: {_import_errors[backend]}" if module is None else module.unavailable_reason(device)
    if why is not None:
        raise ValueError(f"backend {backend!r} is not available for device {device}: {why}")
    return backend
