"""The CPU paths of the ops (impl 'cpu', docs/ops.md "Backends"): PyTorch code laid out and tuned for the CPU.

- filtered_lrelu.py: the phase-domain filtered_lrelu and its custom autograd Functions;
- upfirdn2d.py: the polyphase, channels-last upfirdn2d with the adjoint as its gradient;
- conv.py and winograd.py: the modulated convolution as one shared-weight convolution, and 3x3 convolutions by
  Winograd F(4x4, 3x3).

Each computes the same values as the op's reference (the definition, in the op's own module) up to float
rounding; the tests hold them to it.
"""
