"""Test setup. Without a GPU, Triton kernels run in its interpreter, which must be switched on before import."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from zokernels import backends  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
BACKENDS = [b for b in backends.names() if backends.is_available(b, DEVICE)]
FAST_BACKENDS = [b for b in BACKENDS if b != "reference"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS or [pytest.param(None, marks=pytest.mark.skip(reason="no fast backend here"))])
def fast_backend(request):
    return request.param
