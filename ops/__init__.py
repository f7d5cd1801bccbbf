"""StyleGAN3's custom ops (spec §c): Triton kernels with a pure-PyTorch reference path.

``impl='auto'`` runs Triton on CUDA tensors and the reference elsewhere; ``STYLEGAN3_OPS_IMPL`` overrides it.
"""

import os

# PyTorch's CPU allocator backs large tensors with transparent huge pages when this is set (read once, at the
# first large allocation): the CPU training step spends far less time in page faults on its big temporaries
# (docs/benchmarks.md). Set THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .bias_act import bias_act
from .filtered_lrelu import filtered_lrelu
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["bias_act", "upfirdn2d", "setup_filter", "filter2d", "upsample2d", "downsample2d", "filtered_lrelu"]
