"""Equalised-lr 2-D convolution, stride 1: ``F.conv2d(x, (weight * gain).to(x.dtype), padding=padding)`` (the
discriminator's stride-1 convolutions, docs/algorithm.md "Discriminator").

An op so that the networks need not know the device: the CPU path (ops/_cpu/conv.py) runs 3x3 kernels by Winograd
F(4x4, 3x3) where that is faster; the reference and the GPU path are the plain (cuDNN) convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._cpu.conv import conv2d_cpu
from ._common import check_conv_args
from ._dispatch import select_impl


def conv2d_ref(x: torch.Tensor, weight: torch.Tensor, padding: int, gain: float) -> torch.Tensor:
    """The reference: the weight times its gain, in x's dtype, correlated with x (zero padding, stride 1)."""
    return F.conv2d(x, (weight * gain).to(x.dtype), padding=padding)


def conv2d(x: torch.Tensor, weight: torch.Tensor, padding: int = 0, gain: float = 1.0,
           impl: str = "auto") -> torch.Tensor:
    """``F.conv2d(x, (weight * gain).to(x.dtype), padding=padding)``, stride 1.

    Args:
        x: ``[N, I, H, W]`` float16/float32/float64.
        weight: ``[O, I, kh, kw]`` (any float dtype; cast to x's).
        padding: zero padding on every side, int >= 0.
        gain: a Python number multiplied into the weight (an equalised-lr weight gain).
        impl: 'auto' | 'ref' | 'cpu' | 'triton' (docs/ops.md "Backends"; 'triton' = the reference on the GPU:
            there is no kernel of ours for this op).

    Returns:
        ``[N, O, H + 2p - kh + 1, W + 2p - kw + 1]`` in x's dtype (channels-last strides from the CPU path's
        Winograd), differentiable to any order.
    """
    op = "conv2d"
    check_conv_args(op, x, weight)
    if select_impl(impl, x, op, has_kernel=False) == "cpu":
        return conv2d_cpu(x, weight, int(padding), float(gain))
    return conv2d_ref(x, weight, int(padding), float(gain))
