"""Choosing between the Triton kernels and the PyTorch reference path.

Every public op takes ``impl='auto' | 'ref' | 'triton'``:

- ``'auto'``: Triton for CUDA tensors, the reference for everything else. The environment variable
  ``STYLEGAN3_OPS_IMPL=auto|ref|triton`` overrides ``'auto'`` (never an explicit ``'ref'``/``'triton'``).
- ``'ref'``: pure PyTorch, differentiable by autograd, any device.
- ``'triton'``: the Triton kernels. On CPU tensors they only run under the Triton interpreter, which must be
  switched on (``TRITON_INTERPRET=1``) *before* ``ops._triton`` is imported, because Triton reads the variable when
  ``@triton.jit`` decorates a kernel. Asking for Triton on CPU without it is an error, never a silent fall-back.
"""

from __future__ import annotations

import os
import sys

import torch

IMPLS = ("auto", "ref", "triton")
ENV_VAR = "STYLEGAN3_OPS_IMPL"


def interpreter_requested() -> bool:
    """True if ``TRITON_INTERPRET`` is set to a true value in the environment right now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def select_impl(impl: str, x: torch.Tensor, op: str) -> str:
    """Resolve ``impl`` for a call of ``op`` on tensor ``x``; returns ``'ref'`` or ``'triton'``.

    Raises ValueError for an unknown ``impl`` (or a bad ``STYLEGAN3_OPS_IMPL``) and RuntimeError when Triton is
    requested for a CPU tensor without the interpreter.
    """
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        env = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if env not in IMPLS:
            raise ValueError(f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} is not one of {IMPLS}")
        impl = env
    if impl == "auto":
        impl = "triton" if x.is_cuda else "ref"
    if impl == "triton" and not x.is_cuda:
        if x.device.type != "cpu":
            raise RuntimeError(f"{op}: impl='triton' supports CUDA tensors (or CPU under TRITON_INTERPRET=1), "
                               f"got a tensor on {x.device}; use impl='ref'")
        if not interpreter_requested():
            raise RuntimeError(
                f"{op}: impl='triton' was requested for a CPU tensor, but Triton kernels run on CPU only under "
                f"the Triton interpreter. Set TRITON_INTERPRET=1 before importing ops (it is read when the kernels "
                f"are compiled), move the tensor to a CUDA device, or use impl='ref'"
                + (f" (the {ENV_VAR} environment variable asked for 'triton')" if
                   os.environ.get(ENV_VAR, "").strip().lower() == "triton" else ""))
        triton_pkg = sys.modules.get("ops._triton")
        if triton_pkg is not None and not triton_pkg.INTERPRETED:
            raise RuntimeError(
                f"{op}: TRITON_INTERPRET=1 is set now, but ops._triton was imported before it was set, so its "
                f"kernels were compiled for a GPU. Set TRITON_INTERPRET=1 before the first import of ops._triton")
    return impl
