"""StyleGAN3's ops (docs/algorithm.md "Ops", docs/ops.md): each with a reference (its definition, in the op's
module), a CPU path (ops/_cpu) and, for bias_act, upfirdn2d and filtered_lrelu, Triton kernels (ops/_triton).

``impl='auto'`` runs Triton on CUDA tensors and the CPU path elsewhere; ``STYLEGAN3_OPS_IMPL`` overrides 'auto'
(docs/ops.md "Backends"). Importing ops changes nothing in the process: the environment the CPU path wants is
given to processes when they start (``cpu_process_env``).
"""

import os

# Environment for processes that run the CPU path, set before they start (the training workers get it through
# Ray's runtime_env, the local Ray instance and the driver through pipeline/ray_session.py, bench/model.py's
# measurements through their subprocesses): PyTorch's CPU allocator backs large tensors with transparent huge
# pages, and glibc malloc keeps freed large blocks for reuse instead of returning them to the kernel, so the
# step's big temporaries are not page-faulted in anew on every allocation (docs/benchmarks.md).
# A value already in the environment wins; THP_MEM_ALLOC_ENABLE=0 opts out of the first.
CPU_PROCESS_ENV = {"THP_MEM_ALLOC_ENABLE": "1", "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                   "MALLOC_TRIM_THRESHOLD_": str(64 << 30), "MALLOC_TOP_PAD_": str(1 << 30)}


def cpu_process_env() -> dict:
    """CPU_PROCESS_ENV with the values already set in this environment taking precedence."""
    return {k: os.environ.get(k, v) for k, v in CPU_PROCESS_ENV.items()}


from ._dispatch import IMPLS, check_impl, compute_dtype  # noqa: E402
from .bias_act import bias_act  # noqa: E402
from .conv2d import conv2d  # noqa: E402
from .filtered_lrelu import filtered_lrelu  # noqa: E402
from .modulated_conv import modulated_conv2d  # noqa: E402
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d  # noqa: E402

__all__ = ["CPU_PROCESS_ENV", "cpu_process_env", "IMPLS", "check_impl", "compute_dtype", "bias_act", "conv2d", "upfirdn2d",
           "setup_filter", "filter2d", "upsample2d", "downsample2d", "filtered_lrelu", "modulated_conv2d"]
