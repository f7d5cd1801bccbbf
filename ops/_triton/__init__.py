"""Triton kernels of the ops (spec §c) with their autograd Functions.

Triton reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates a kernel, i.e. when these modules are imported:
``INTERPRETED`` records whether they were compiled for the CPU interpreter, so the dispatcher can tell a caller who
sets the variable too late.
"""

from .._dispatch import interpreter_requested

INTERPRETED = interpreter_requested()
