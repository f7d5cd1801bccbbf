"""StyleGAN3's custom ops (docs/algorithm.md "Ops"): Triton kernels with a pure-PyTorch reference path.

``impl='auto'`` runs Triton on CUDA tensors and the reference elsewhere; ``STYLEGAN3_OPS_IMPL`` overrides it.
"""

import os

# Environment for processes that run the CPU path, set before they start (the training workers get it through
# Ray's runtime_env, bench/model.py through its subprocesses): PyTorch's CPU allocator backs large tensors with
# transparent huge pages, and glibc malloc keeps freed large blocks for reuse instead of returning them to the
# kernel, so the step's big temporaries are not page-faulted in anew on every allocation (docs/benchmarks.md).
# A value already in the environment wins; THP_MEM_ALLOC_ENABLE=0 opts out of the first.
CPU_PROCESS_ENV = {"THP_MEM_ALLOC_ENABLE": "1", "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                   "MALLOC_TRIM_THRESHOLD_": str(64 << 30), "MALLOC_TOP_PAD_": str(1 << 30)}
# torch reads THP_MEM_ALLOC_ENABLE at its first large allocation, so it still takes effect in this process.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def cpu_process_env() -> dict:
    """CPU_PROCESS_ENV with the values already set in this environment taking precedence."""
    return {k: os.environ.get(k, v) for k, v in CPU_PROCESS_ENV.items()}


from .bias_act import bias_act
from .filtered_lrelu import filtered_lrelu
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["CPU_PROCESS_ENV", "cpu_process_env", "bias_act", "upfirdn2d", "setup_filter", "filter2d", "upsample2d",
           "downsample2d", "filtered_lrelu"]
