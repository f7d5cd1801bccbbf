"""stylegan3-ray: the pipeline (data, training, tuning, tracking, metrics, generation)."""

import os

# PyTorch's CPU allocator backs large tensors with transparent huge pages when this is set (read once, at the
# first large allocation): the CPU training step spends far less time in page faults on its big temporaries
# (docs/benchmarks.md). Set THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
