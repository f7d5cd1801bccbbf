"""Triton kernels of the ops (docs/algorithm.md "Ops") with their autograd Functions.

Triton reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates a kernel, i.e. when these modules are imported:
``INTERPRETED`` records whether they were compiled for the CPU interpreter, so the dispatcher can tell a caller who
sets the variable too late.

Every kernel launch goes through ``launch``: normally ``kernel[grid](...)``; inside
``ops._triton.static_compile.compile_only`` it compiles the exact specialisation the launch would get on the GPU
target without running it, and reports the launch (grid, arguments, compiled kernel) to a recorder.
"""

from .._dispatch import interpreter_requested

INTERPRETED = interpreter_requested()

_recorder = None  # set by static_compile.compile_only: called as recorder(kernel, grid, compiled, args, kwargs)


def launch(kernel, grid, *args, **kwargs):
    """``kernel[grid](*args, **kwargs)``, or (in compile-only mode) compile it for the target and record it."""
    if _recorder is None:
        return kernel[grid](*args, **kwargs)
    compiled = kernel.run(*args, grid=grid, warmup=True, **kwargs)
    _recorder(kernel, tuple(grid), compiled, args, kwargs)
    return compiled
