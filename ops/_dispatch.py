"""Choosing an op's backend (docs/ops.md "Backends").

Every public op takes ``impl='auto' | 'ref' | 'cpu' | 'triton'``:

- ``'auto'``: Triton for CUDA tensors, the CPU path for everything else. The environment variable
  ``STYLEGAN3_OPS_IMPL=auto|ref|cpu|triton`` overrides ``'auto'`` (never an explicit choice): a switch for users
  and whole programs (bench/gpu_acceptance.py); tests and benchmarks pass ``impl`` explicitly.
- ``'ref'``: the reference, the op's definition written for reading (the test oracle); PyTorch, any device.
- ``'cpu'``: the CPU path in ops/_cpu (phase-domain filtered_lrelu, channels-last polyphase upfirdn2d, Winograd
  convolutions); PyTorch, so it runs on any device, but it is laid out and tuned for the CPU.
- ``'triton'``: the Triton kernels in ops/_triton. On CPU tensors they only run under the Triton interpreter,
  which must be switched on (``TRITON_INTERPRET=1``) *before* ``ops._triton`` is imported, because Triton reads
  the variable when ``@triton.jit`` decorates a kernel. Asking for Triton on CPU without it is an error, never a
  silent fall-back. Ops without a Triton kernel (the convolutions) run their GPU path, the reference's
  cuDNN convolutions, for ``'triton'``.

Nothing here is a module-level switch: the choice is the argument (the networks carry it, models/), the tensor's
device and, for ``'auto'`` only, the environment variable.
"""

from __future__ import annotations

import os
import sys

import torch

IMPLS = ("auto", "ref", "cpu", "triton")
ENV_VAR = "STYLEGAN3_OPS_IMPL"


def interpreter_requested() -> bool:
    """True if ``TRITON_INTERPRET`` is set to a true value in the environment right now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def check_impl(impl: str, what: str) -> str:
    """``impl`` if it is one of IMPLS, else ValueError naming ``what`` (an op or a network)."""
    if impl not in IMPLS:
        raise ValueError(f"{what}: impl must be one of {IMPLS}, got {impl!r}")
    return impl


def select_impl(impl: str, x: torch.Tensor, op: str, has_kernel: bool = True) -> str:
    """Resolve ``impl`` for a call of ``op`` on tensor ``x``; returns ``'ref'``, ``'cpu'`` or ``'triton'``.

    ``has_kernel=False`` (an op with no Triton kernel): ``'triton'`` is returned without the interpreter checks;
    the op runs its GPU path. Raises ValueError for an unknown ``impl`` (or a bad ``STYLEGAN3_OPS_IMPL``) and
    RuntimeError when Triton is requested for a CPU tensor without the interpreter.
    """
    check_impl(impl, op)
    if impl == "auto":
        env = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if env not in IMPLS:
            raise ValueError(f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} is not one of {IMPLS}")
        impl = env
    if impl == "auto":
        impl = "triton" if x.is_cuda else "cpu"
    if impl == "triton" and has_kernel and not x.is_cuda:
        if x.device.type != "cpu":
            raise RuntimeError(f"{op}: impl='triton' supports CUDA tensors (or CPU under TRITON_INTERPRET=1), "
                               f"got a tensor on {x.device}; use impl='ref' or 'cpu'")
        if not interpreter_requested():
            raise RuntimeError(
                f"{op}: impl='triton' was requested for a CPU tensor, but Triton kernels run on CPU only under "
                f"the Triton interpreter. Set TRITON_INTERPRET=1 before importing ops (it is read when the kernels "
                f"are compiled), move the tensor to a CUDA device, or use impl='cpu' or 'ref'"
                + (f" (the {ENV_VAR} environment variable asked for 'triton')" if
                   os.environ.get(ENV_VAR, "").strip().lower() == "triton" else ""))
        triton_pkg = sys.modules.get("ops._triton")
        if triton_pkg is not None and not triton_pkg.INTERPRETED:
            raise RuntimeError(
                f"{op}: TRITON_INTERPRET=1 is set now, but ops._triton was imported before it was set, so its "
                f"kernels were compiled for a GPU. Set TRITON_INTERPRET=1 before the first import of ops._triton")
    return impl


def compute_dtype(x: torch.Tensor, fp16: bool) -> torch.dtype:
    """The dtype a network layer runs in (docs/algorithm.md "Mixed precision"): float16 for a layer marked fp16
    (``fp16``) when ``x`` is on a CUDA device, where cuDNN and the kernels run it fast; float32 otherwise (the
    CPU path has no fast float16). The models ask this instead of looking at the device themselves."""
    return torch.float16 if fp16 and x.is_cuda else torch.float32
