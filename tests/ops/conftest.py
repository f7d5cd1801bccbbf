"""Fixtures for the ops tests.

Triton kernels run on CPU only under the interpreter, and Triton reads ``TRITON_INTERPRET`` when a kernel module
is imported: it is set here, before any test imports ``ops._triton`` (on a machine with CUDA the kernels compile
for the GPU instead). ``kernel_worker`` runs kernel checks in a separate process (see kernel_worker.py).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    """On 2 shared cores OpenMP's barriers make tiny ops (gradcheck's thousands of calls) ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kernel_worker():
    from tests.ops.kernel_worker import KernelWorker

    worker = KernelWorker()
    try:
        yield worker
    finally:
        worker.close()
